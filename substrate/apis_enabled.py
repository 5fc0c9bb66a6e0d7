"""apis_enabled: the Google APIs the substrate needs, enabled through Service Usage."""

from __future__ import annotations

from dataclasses import dataclass

from resources.errors import ServiceUsageDisabled

from .config import EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action

# The fork's Terraform (required_services, infra/gke/terraform/main.tf), plus IAM itself: gpuplat creates
# the service accounts. Cloud Build is the fork's too: nothing of the substrate calls it, but a project
# gpuplat builds then holds what the fork's Terraform would, and one Terraform built is adopted unchanged.
BASE_APIS = ("cloudbuild.googleapis.com", "container.googleapis.com", "compute.googleapis.com", "iam.googleapis.com",
             "iamcredentials.googleapis.com")
# Wanted, not required: the Billing Catalog prices the nodes (running cost, idle GPU nodes), and reading
# it counts against this project, which must have the API enabled (free, no billing account needed).
# It rides along when gpuplat enables APIs anyway; gpuplat never makes a call for it alone, so a
# project the fork's Terraform built is adopted unchanged, and its prices say how to enable it.
OPTIONAL_APIS = ("cloudbilling.googleapis.com",)


@dataclass(frozen=True)
class ApisSpec:
    project: str
    services: tuple[str, ...]  # empty off GKE: no cloud APIs apply
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApisObserved:
    applies: bool
    enabled: tuple[str, ...] = ()  # only the required ones: other enabled APIs are not ours
    service_usage_disabled: bool = False

    def owned(self) -> dict:
        return {"applies": self.applies, "enabled": list(self.enabled),
                "service_usage_disabled": self.service_usage_disabled}


# ---- desired ------------------------------------------------------------------------------------
def desired_apis(env: EnvConfig) -> ApisSpec:
    if not env.is_gke:
        # Off GKE only Secret Manager is Google's, and only when it is the secret backend.
        return ApisSpec(env.cluster.projectID, ("secretmanager.googleapis.com",) if env.secret_backend == "gcpsm" else ())
    services = list(BASE_APIS)
    if env.secret_backend == "gcpsm":
        services.append("secretmanager.googleapis.com")
    if env.substrate.model_registry.enabled:
        services.append("artifactregistry.googleapis.com")
    return ApisSpec(env.cluster.projectID, tuple(services), OPTIONAL_APIS)


# ---- observe ------------------------------------------------------------------------------------
def observe_apis(run: Run, spec: ApisSpec) -> ApisObserved:
    if not spec.services:
        return ApisObserved(applies=False)
    try:
        enabled = run.conn.google.enabled_services()
    except ServiceUsageDisabled:
        return ApisObserved(applies=True, service_usage_disabled=True)
    return ApisObserved(applies=True, enabled=tuple(s for s in (*spec.services, *spec.optional) if s in enabled))


# ---- plan ---------------------------------------------------------------------------------------
def bootstrap_command(project: str) -> str:
    return f"gcloud services enable serviceusage.googleapis.com cloudresourcemanager.googleapis.com --project {project}"


def plan_apis(spec: ApisSpec, observed: ApisObserved) -> list[Action]:
    if not observed.applies:
        return []
    if observed.service_usage_disabled:
        return [Action("cannot-fix", f"project {spec.project}", "serviceusage.googleapis.com",
                       desired="enabled", observed="disabled",
                       remedy=f"a blank project needs its bootstrap APIs first: {bootstrap_command(spec.project)}")]
    missing = [s for s in spec.services if s not in observed.enabled]
    if not missing:
        return []
    missing += [s for s in spec.optional if s not in observed.enabled]
    return [Action("update", f"project {spec.project}", "enabled services", desired=missing, observed=[],
                   args={"services": missing})]


# ---- apply --------------------------------------------------------------------------------------
def apply_apis(run: Run, spec: ApisSpec, observed: ApisObserved, actions: list[Action]) -> None:
    for action in actions:
        if action.kind == "update":
            run.log.info(f"enabling {', '.join(action.args['services'])} in project {spec.project}")
            run.conn.google.enable_services(action.args["services"])


# ---- checks -------------------------------------------------------------------------------------
def check_required(spec: ApisSpec, observed: ApisObserved, env: EnvConfig) -> Outcome:
    if not observed.applies:
        return Outcome(True, f"substrate {env.substrate.kind}: no cloud APIs apply")
    if observed.service_usage_disabled:
        return Outcome(False, "Service Usage is disabled", {"remedy": bootstrap_command(spec.project)})
    missing = [s for s in spec.services if s not in observed.enabled]
    off = [s for s in spec.optional if s not in observed.enabled]
    return Outcome(not missing, "required APIs enabled" if not missing else f"missing: {', '.join(missing)}",
                   {"required": list(spec.services), "missing": missing,
                    "remedy": f"materialize apis_enabled, or gcloud services enable {' '.join(missing)} "
                              f"--project {spec.project}" if missing else "",
                    "optional_not_enabled": (f"{', '.join(off)}: prices unavailable until gcloud services enable "
                                             f"{' '.join(off)} --project {spec.project}") if off else ""})


class ApisEnabled(Piece[ApisSpec, ApisObserved]):
    name = "apis_enabled"
    description = "Google APIs the substrate needs (container, compute, iamcredentials, secretmanager, ...) are enabled."
    group = "cloud"
    kinds = frozenset({"gcp"})
    deps = ()
    owned_fields = ("enabled services (only the required ones)",)
    checks = (Check("required_apis_enabled", "Every API the substrate needs is enabled in the project.",
                    check_required, blocking=True),)

    def desired(self, env: EnvConfig) -> ApisSpec:
        return desired_apis(env)

    def observe(self, run: Run, spec: ApisSpec) -> ApisObserved:
        return observe_apis(run, spec)

    def plan(self, spec: ApisSpec, observed: ApisObserved) -> list[Action]:
        return plan_apis(spec, observed)

    def apply(self, run: Run, spec: ApisSpec, observed: ApisObserved, actions: list[Action]) -> None:
        apply_apis(run, spec, observed, actions)

    def links(self, env: EnvConfig, observed: ApisObserved) -> dict[str, str]:
        return ({"console": f"https://console.cloud.google.com/apis/dashboard?project={env.cluster.projectID}"}
                if env.is_gke else {})

    def keeps_when_paused(self, env: EnvConfig) -> bool:
        return True


PIECE = ApisEnabled()
