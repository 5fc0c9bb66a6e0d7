"""secrets_seeded: the platform's internal random secrets created once, the external ones reported.

Create-if-absent, never overwrite, one list call to observe. Values are generated in memory at apply
time and sent straight to the backend: they never reach a log, an event, metadata or stdout.
"""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass

import bcrypt

from .config import ESO_PROVIDER_DOCS, EnvConfig
from .piece import Check, Outcome, Piece, Run
from .plan import Action

DEX_CLIENTS = ("grafana", "argocd", "open-webui", "litellm", "n8n", "oauth2-proxy")
HEX32 = "hex32"  # 32 random bytes as 64 hex chars
HEX16 = "hex16"  # 16 random bytes as 32 hex chars (oauth2-proxy needs a 16/24/32-byte cookie secret)
DEX_ADMIN = ("dex-admin-password", "dex-admin-hash")


@dataclass(frozen=True)
class SecretsSpec:
    project: str
    backend: str
    internal: tuple[tuple[str, str], ...]  # (name, generator)
    external: tuple[str, ...]

    @property
    def all_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.internal) + DEX_ADMIN + self.external


@dataclass(frozen=True)
class SecretsObserved:
    writable: bool
    present: tuple[str, ...]  # names only, never values

    def owned(self) -> dict:
        return {"writable": self.writable, "present": sorted(self.present)}


# ---- desired ------------------------------------------------------------------------------------
def desired_secrets(env: EnvConfig) -> SecretsSpec:
    internal = [(n, HEX32) for n in ("litellm-master-key", "litellm-salt-key", "vllm-api-key", "litellm-db-password",
                                     "litellm-grafana-ro-password")]
    internal += [(f"dex-{c}-client-secret", HEX32) for c in DEX_CLIENTS]
    if env.feature("n8n"):
        internal.append(("n8n-encryption-key", HEX32))
    internal.append(("oauth2-proxy-cookie-secret", HEX16))
    return SecretsSpec(env.cluster.projectID, env.secret_backend, tuple(internal), tuple(env.substrate.external_secrets))


# ---- observe ------------------------------------------------------------------------------------
def observe_secrets(run: Run, spec: SecretsSpec) -> SecretsObserved:
    if spec.backend != "gcpsm":
        # gpuplat cannot write other backends: what counts is what ESO materialized in the cluster.
        names = {name for _, name in run.conn.kube.secret_names()}
        return SecretsObserved(False, tuple(n for n in spec.all_names if n in names))
    ids = run.conn.google.secret_ids()
    return SecretsObserved(True, tuple(n for n in spec.all_names if n in ids))


# ---- plan ---------------------------------------------------------------------------------------
def plan_secrets(spec: SecretsSpec, observed: SecretsObserved) -> list[Action]:
    if not observed.writable:
        return []
    present = set(observed.present)
    actions = [Action("create", f"secret {name}", desired=f"random ({gen})", args={"generator": gen})
               for name, gen in spec.internal if name not in present]
    dex = [n for n in DEX_ADMIN if n in present]
    if not dex:
        actions.append(Action("create", "secrets dex-admin-password + dex-admin-hash", desired="random + bcrypt $2a$",
                              args={"generator": "dex-admin"}))
    elif len(dex) == 1:
        missing = next(n for n in DEX_ADMIN if n not in present)
        actions.append(Action("cannot-fix", f"secret {missing}", observed="absent while its pair exists",
                              remedy="the password and its hash are created together; delete the remaining one in "
                                     "Secret Manager to let gpuplat create both"))
    return actions


# ---- apply --------------------------------------------------------------------------------------
def _generate(generator: str) -> bytes:
    return pysecrets.token_hex(32 if generator == HEX32 else 16).encode()


def apply_secrets(run: Run, spec: SecretsSpec, observed: SecretsObserved, actions: list[Action]) -> None:
    g = run.conn.google
    created = 0
    for a in actions:
        if a.kind != "create":
            continue
        if a.args["generator"] == "dex-admin":
            password = pysecrets.token_urlsafe(24).encode()
            # Dex reads the $2a$ form; bcrypt's $2b$ hashes are the same algorithm.
            hashed = b"$2a$" + bcrypt.hashpw(password, bcrypt.gensalt(rounds=10))[4:]
            created += g.create_secret("dex-admin-password", password)
            created += g.create_secret("dex-admin-hash", hashed)
        else:
            created += g.create_secret(a.target.removeprefix("secret "), _generate(a.args["generator"]))
    run.log.info(f"created {created} secret(s) in Secret Manager of {spec.project} (names in the plan; values never logged)")


# ---- checks -------------------------------------------------------------------------------------
def check_internal(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    wanted = [n for n, _ in spec.internal] + list(DEX_ADMIN)
    if not observed.writable:
        # gpuplat cannot write this backend: eso_secrets_materialized says whether the keys reached the cluster.
        return Outcome(True, f"backend {spec.backend}: gpuplat does not write it; the {len(wanted)} keys it needs "
                             f"are listed by eso_secrets_materialized", {"keys": ", ".join(wanted)})
    missing = [n for n in wanted if n not in observed.present]
    return Outcome(not missing, f"{len(wanted) - len(missing)}/{len(wanted)} internal secrets present in Secret Manager",
                   {"expected": len(wanted), "missing": ", ".join(missing),
                    "remedy": "materialize secrets_seeded" if missing else ""})


def check_materialized(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    if observed.writable:
        return Outcome(True, "gcpsm: gpuplat seeds Secret Manager itself (internal_secrets_present); ESO reads it "
                             "through Workload Identity")
    missing = [n for n in spec.all_names if n not in observed.present]
    return Outcome(not missing, f"{len(spec.all_names) - len(missing)}/{len(spec.all_names)} Kubernetes Secrets "
                                f"materialized by ESO from {spec.backend}",
                   {"keys_that_must_exist": ", ".join(spec.all_names), "missing": ", ".join(missing),
                    "eso_provider_docs": ESO_PROVIDER_DOCS,
                    "remedy": (f"create {', '.join(missing)} in your {spec.backend} backend with its own tooling "
                               f"(vault kv put, aws secretsmanager create-secret, kubectl); fill the provider block of "
                               f"ClusterSecretStore secret-store; ESO then materializes them") if missing else ""})


def check_external(spec: SecretsSpec, observed: SecretsObserved, env: EnvConfig) -> Outcome:
    missing = [n for n in spec.external if n not in observed.present]
    remedy = ""
    if missing and observed.writable:
        remedy = "; ".join(f"printf %s \"$VALUE\" | gcloud secrets create {n} --data-file=- --project "
                           f"{spec.project}" for n in missing)
    elif missing:
        remedy = f"create {', '.join(missing)} in your {spec.backend} backend; ESO provider docs: {ESO_PROVIDER_DOCS}"
    return Outcome(not missing, f"external secrets: {len(spec.external) - len(missing)}/{len(spec.external)} present",
                   {"present": ", ".join(n for n in spec.external if n not in missing), "missing": ", ".join(missing),
                    "remedy": remedy})


PIECE = Piece(
    name="secrets_seeded",
    description="The platform's internal random secrets exist (created once, never overwritten); external ones are reported.",
    group="secrets", kinds=frozenset({"gcp", "secretmanager"}), deps=("apis_enabled",),
    owned_fields=("existence of each internal secret (never its value)",),
    desired=desired_secrets, observe=observe_secrets, plan=plan_secrets, apply=apply_secrets,
    checks=(Check("internal_secrets_present", "Every internal random secret exists in the backend.", check_internal,
                  blocking=True),
            Check("external_secrets_present", "Every external secret the config needs exists.", check_external),
            Check("eso_secrets_materialized", "Off gcpsm: ESO has materialized every Kubernetes Secret the platform "
                  "reads.", check_materialized)),
    links=lambda env, obs: ({"console": f"https://console.cloud.google.com/security/secret-manager?project="
                                       f"{env.cluster.projectID}"} if env.secret_backend == "gcpsm" else
                            {"eso_provider_docs": ESO_PROVIDER_DOCS}),
)
