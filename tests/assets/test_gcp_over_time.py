"""What real GCP does over time, met through the official clients on the sandbox: eventual consistency,
busy clusters, conditional IAM policies, lost answers. Each test cites the public source of the behaviour
the sandbox reproduces; each behaviour is off by default in the sandbox and switched on per project."""

from __future__ import annotations

import base64
import json

import pytest
from google.cloud import container_v1, resourcemanager_v3, secretmanager_v1
from google.iam.v1 import policy_pb2

from tests.conftest import admin, client_options

PROJECT = "gpuplat-test"
LOCATION = "us-central1-a"
CLUSTER = f"projects/{PROJECT}/locations/{LOCATION}/clusters/ai-dev"


def messages(gp, result) -> str:
    """Everything the run logged (context.log lines included)."""
    return "\n".join(r.user_message for r in gp.instance.all_logs(result.run_id))


def failure(result) -> str:
    return "\n".join(e.event_specific_data.error.message for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def created(gp) -> dict[str, int]:
    """How often each create was called: a retry of a lost answer counts, so does a duplicate."""
    calls = gp.admin.calls()
    methods = {f"{api}.{m}": n for api, c in calls.items() if api != "_total" for m, n in c.get("methods", {}).items()}
    return {k: v for k, v in methods.items() if ".Create" in k or ".AddSecretVersion" in k or ".BatchEnable" in k}


def state_counts(gp) -> dict[str, object]:
    """What exists, read back with Google's own clients: one of each, never two."""
    gke = container_v1.ClusterManagerClient(**client_options(gp.admin.urls, "container"))
    clusters = gke.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    versions = {s.name.rsplit("/", 1)[1]: len(list(sm.list_secret_versions(parent=s.name)))
                for s in sm.list_secrets(parent=f"projects/{PROJECT}")}
    return {"clusters": [c.name for c in clusters], "pools": sorted(p.name for c in clusters for p in c.node_pools),
            "secret_versions": sorted(set(versions.values()))}


def new_project(gp, **settings) -> None:
    """A new project as GCP hands it out: bootstrap APIs only, billing linked, with the given behaviours."""
    admin(gp.admin.urls, "POST", "/sandbox/projects", {
        "project": PROJECT, "enabled": ["serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"],
        **settings})


# ---- 1 and 2: IAM and Service Usage are eventually consistent -------------------------------------
def test_a_new_project_with_slow_iam_and_slow_apis_is_built_on_the_first_run_with_no_duplicate(gp, fast_clock):
    """A service account is unusable for "60 seconds or more" after its creation
    (https://cloud.google.com/iam/docs/service-accounts-create): IAM and GKE answer 400 'Service account ...
    does not exist.' (sassoftware/viya4-iac-gcp#148), which Terraform retries (`IamServiceAccountNotFound`,
    hashicorp/terraform-provider-google google/transport/error_retry_predicates.go). A service just enabled
    answers SERVICE_DISABLED "wait a few minutes for the action to propagate", naming its consumer by project
    number (google/api/error_reason.proto; terraform-google-modules/cloud-foundation-training#20)."""
    # Five of fast_clock's 30 s steps (2.5 s of wall time): a new account's first use meets the propagation
    # however slowly the machine gets from CreateServiceAccount to that use (20 s, under one step, was missed
    # on a loaded CI machine when a step fell between the two).
    new_project(gp, number="424242424242", iam_propagation=150, propagation=60)
    gp.admin.reset()
    first = gp.materialize()
    assert first.success, failure(first)
    log = messages(gp, first)
    assert "waiting on" in log and "not known to Google yet" in log, log[-3000:]  # the wait said so, as it went
    creates = created(gp)
    assert creates["iam.CreateServiceAccount"] == 2 and creates["container.CreateCluster"] == 1
    assert creates["container.CreateNodePool"] == 1 and creates["artifactregistry.CreateRepository"] == 1
    assert state_counts(gp) == {"clusters": ["ai-dev"], "pools": ["default-pool", "gpu-l4"], "secret_versions": [1]}
    gp.admin.reset()
    assert gp.materialize().success
    assert gp.admin.calls()["_total"]["mutate"] == 0


def test_service_disabled_names_the_project_number_and_a_just_enabled_api_is_waited_for(gp, fast_clock):
    """The consumer in SERVICE_DISABLED is `projects/<number>` (error_reason.proto's example, and real answers:
    terraform-google-modules/cloud-foundation-training#20): the marker of a service gpuplat just enabled must
    match that form too, or the propagation is never waited out."""
    # Five of fast_clock's 30 s steps: the first call after the enable meets the propagation on a slow machine too.
    new_project(gp, number="777000111222", propagation=150)
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    from google.api_core import exceptions
    with pytest.raises(exceptions.Forbidden) as refused:
        sm.list_secrets(parent=f"projects/{PROJECT}")
    assert refused.value.reason == "SERVICE_DISABLED"
    assert refused.value.metadata["consumer"] == "projects/777000111222"
    result = gp.materialize(select=["apis_enabled", "secrets_seeded"])
    assert result.success, failure(result)
    # ...after it met the propagation and waited it out, saying so (not because the fault never fired):
    assert "waiting on a Google API: secretmanager.googleapis.com is not enabled" in messages(gp, result)


# ---- 3: conditional bindings survive ------------------------------------------------------------------
def test_a_conditional_binding_and_audit_configs_someone_else_made_are_kept_as_they_were(gp):
    """"Any operation that affects conditional role bindings must specify version 3" and a version-1 write
    without the etag loses every condition (google/iam/v1/policy.proto); `auditConfigs` change only when the
    update mask names them (google/iam/v1/iam_policy.proto, default "bindings, etag")."""
    gp.materialize(select=["apis_enabled"])
    rm = resourcemanager_v3.ProjectsClient(**client_options(gp.admin.urls, "cloudresourcemanager"))
    resource = f"projects/{PROJECT}"
    policy = rm.get_iam_policy(request={"resource": resource, "options": {"requested_policy_version": 3}})
    policy.version = 3
    policy.bindings.add(role="roles/secretmanager.secretAccessor", members=["user:oncall@example.com"],
                        condition={"title": "business hours", "expression": "request.time.getHours('UTC') < 18"})
    policy.audit_configs.add(service="allServices", audit_log_configs=[{"log_type": "DATA_READ"}])
    rm.set_iam_policy(request={"resource": resource, "policy": policy,
                               "update_mask": {"paths": ["bindings", "etag", "audit_configs"]}})
    before = rm.get_iam_policy(request={"resource": resource, "options": {"requested_policy_version": 3}})

    assert gp.materialize(select=["service_accounts"]).success
    after = rm.get_iam_policy(request={"resource": resource, "options": {"requested_policy_version": 3}})
    assert after.version == 3
    conditional = [b for b in after.bindings if b.condition.expression]
    assert [(b.role, list(b.members), b.condition.title, b.condition.expression) for b in conditional] == [
        ("roles/secretmanager.secretAccessor", ["user:oncall@example.com"], "business hours",
         "request.time.getHours('UTC') < 18")]
    assert [(c.service, [a.log_type for a in c.audit_log_configs]) for c in after.audit_configs] == [
        ("allServices", [policy_pb2.AuditLogConfig.LogType.DATA_READ])]
    # Every member of every unconditional binding that was there is still there; gpuplat only added its own.
    for b in before.bindings:
        if not b.condition.expression:
            kept = {m for x in after.bindings if x.role == b.role and not x.condition.expression for m in x.members}
            assert set(b.members) <= kept, b.role
    assert {b.role for b in after.bindings} > {b.role for b in before.bindings}


# ---- 4: busy clusters ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_cluster_busy_with_an_upgrade_is_waited_for_and_the_change_then_made(gp, fast_clock):
    """A new cluster is often busy for many minutes with its first upgrade: RECONCILING, an UPGRADE_MASTER
    operation running (container v1 Cluster.Status: "RECONCILING indicates that some work is actively being
    done on the cluster, such as upgrading the master"). gpuplat waits for it, saying so, then changes."""
    assert gp.materialize().success
    gp.admin.call("POST", "/sandbox/gke/upgrade", {"cluster": CLUSTER, "version": "1.34.1-gke.1200",
                                                   "busySeconds": 900})
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": CLUSTER, "nodePool": "gpu-l4",
                                                           "patch": {"autoscaling": {"maxNodeCount": 3}}})
    result = gp.materialize(select=["gpu_pool"])
    assert result.success, failure(result)
    log = messages(gp, result)
    assert "(UPGRADE_MASTER) already in progress" in log, log[-3000:]
    gke = container_v1.ClusterManagerClient(**client_options(gp.admin.urls, "container"))
    pool = gke.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-l4")
    assert pool.autoscaling.max_node_count == 1


def test_a_cluster_that_turns_busy_between_the_read_and_the_change_is_retried_with_progress(gp):
    """GKE refuses a change while an operation runs on the cluster: 400 FAILED_PRECONDITION "Operation
    operation-... is currently upgrading cluster ... Please wait and try again once it is done."
    (hashicorp/terraform-provider-google#3650); Terraform waits on FAILED_PRECONDITION for node pools
    (resource_container_node_pool.go, retryWhileIncompatibleOperation). gpuplat waits up to GKE's own
    bound on an operation (30 minutes), where it used to give up after 180 s."""
    assert gp.materialize().success
    gp.admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": CLUSTER, "nodePool": "gpu-l4",
                                                           "patch": {"autoscaling": {"maxNodeCount": 3}}})
    gp.admin.fault("container", "SetNodePoolAutoscaling", "busy", count=4)
    gp.admin.reset()
    result = gp.materialize(select=["gpu_pool"])
    assert result.success, failure(result)
    assert gp.admin.calls()["container"]["methods"]["SetNodePoolAutoscaling"] == 5
    log = messages(gp, result)
    assert "waiting on GKE (the cluster is busy with another operation)" in log, log[-3000:]
    assert "is currently upgrading cluster" in log


# ---- 5: the GKE token's scopes --------------------------------------------------------------------
def test_the_gke_token_carries_userinfo_email_so_rbac_by_email_applies(gp):
    """gke-gcloud-auth-plugin asks cloud-platform and userinfo.email: "userinfo.email is used to authenticate
    to GKE APIs with gserviceaccount email instead of numeric uniqueID"
    (kubernetes/cloud-provider-gcp cmd/gke-gcloud-auth-plugin/default_credentials_token_provider.go)."""
    import kubernetes

    from resources.credentials import tokens_for
    assert gp.materialize(select=["apis_enabled", "service_accounts", "cluster"]).success
    gke = container_v1.ClusterManagerClient(**client_options(gp.admin.urls, "container"))
    cluster = gke.get_cluster(name=CLUSTER)
    ca = gp.tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster.master_auth.cluster_ca_certificate))
    key = gp.sandbox.state_dir / "credentials.json"

    def whoami(token: str) -> str:
        cfg = kubernetes.client.Configuration()
        cfg.host, cfg.ssl_ca_cert = f"https://{cluster.endpoint}", str(ca)
        cfg.api_key, cfg.api_key_prefix = {"BearerToken": token}, {"BearerToken": "Bearer"}
        api = kubernetes.client.AuthenticationV1Api(kubernetes.client.ApiClient(cfg))
        return api.create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                               "kind": "SelfSubjectReview"}).status.user_info.username

    email = json.loads(key.read_text())["client_email"]
    assert whoami(tokens_for(key).token()) == email
    # The same account with cloud-platform only is its numeric id to GKE: RBAC by email would not apply.
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account
    narrow = service_account.Credentials.from_service_account_file(
        str(key), scopes=["https://www.googleapis.com/auth/cloud-platform"])
    narrow.refresh(Request())
    assert whoami(narrow.token).isdigit()


# ---- 6: what ESO reads as `latest` ----------------------------------------------------------------------
def test_a_disabled_newest_version_fails_the_check_with_the_remedy_and_never_crashes(gp):
    """`versions/latest` is "an alias to the most recently created SecretVersion" whatever its state
    (https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access); ESO
    reads it and meets FAILED_PRECONDITION "Secret Version [...] is in DISABLED state."
    (external-secrets/external-secrets#4042)."""
    assert gp.materialize(select=["apis_enabled", "secrets_seeded"]).success
    sm = secretmanager_v1.SecretManagerServiceClient(**client_options(gp.admin.urls, "secretmanager"))
    for name in ("litellm-master-key", "dex-admin-password"):
        secret = f"projects/{PROJECT}/secrets/{name}"
        added = sm.add_secret_version(parent=secret, payload={"data": b"rotated-by-hand"})
        sm.disable_secret_version(name=added.name)  # an older version is still enabled
    checks = {e.check_name: e for e in gp.drift_checks(raise_on_error=False).get_asset_check_evaluations()
              if e.asset_key.path[-1] == "secrets_seeded"}
    present = checks["internal_secrets_present"]
    assert not present.passed
    assert "litellm-master-key: its newest version 2 is DISABLED" in present.description
    assert "gcloud secrets versions enable" in present.metadata["remedy"].value
    assert not checks["dex_admin_hash_matches"].passed  # its password is unreadable too: said, not raised
    # An ordinary secret gets a version and reads again; the Dex password needs a person (a new password
    # would no longer match its hash): the exact remedy, nothing changed for it.
    refused = gp.materialize(select=["secrets_seeded"], raise_on_error=False)
    assert not refused.success
    assert ("cannot-fix secret dex-admin-password: its newest version 2 is DISABLED (enable that version again"
            in failure(refused)), failure(refused)
    sm.enable_secret_version(name=f"projects/{PROJECT}/secrets/dex-admin-password/versions/2")
    repaired = gp.materialize(select=["secrets_seeded"])
    assert repaired.success and gp.checks(repaired)[("secrets_seeded", "internal_secrets_present")]


# ---- 7: transient errors and lost answers on every create and poll ------------------------------------
FAULTS = [
    ("container", "CreateCluster", "lost"), ("container", "CreateCluster", "500"),
    ("container", "CreateNodePool", "lost"), ("container", "CreateNodePool", "429"),
    ("container", "GetOperation", "lost"), ("container", "GetOperation", "503"),
    ("serviceusage", "BatchEnableServices", "lost"), ("serviceusage", "GetOperation", "429"),
    ("iam", "CreateServiceAccount", "lost"), ("iam", "CreateServiceAccount", "503"),
    ("secretmanager", "CreateSecret", "lost"), ("secretmanager", "AddSecretVersion", "lost"),
    ("secretmanager", "AddSecretVersion", "500"), ("artifactregistry", "CreateRepository", "lost"),
    ("artifactregistry", "GetOperation", "429"), ("cloudresourcemanager", "SetIamPolicy", "lost"),
]


@pytest.mark.slow
@pytest.mark.parametrize("api, method, kind", FAULTS, ids=[f"{k} on {a}.{m}" for a, m, k in FAULTS])
def test_every_create_and_poll_converges_through_a_fault_with_no_duplicate(gp, api, method, kind):
    """A lost answer is the real world's worst case: the call was carried out, and the caller cannot tell it
    from one that never arrived (AIP-155: "the client most likely did not receive the previous response");
    GKE's create has no request id, so a retry meets 409 "Already exists" (cilium/cilium#25918) and must
    wait for the operation in flight. 5xx and 429 are retried as Terraform retries them
    (isCommonRetryableErrorCode: 429, 500, 502, 503)."""
    gp.admin.fault(api, method, kind, count=1)
    result = gp.materialize()
    assert result.success, failure(result)
    assert not gp.admin.call("GET", "/sandbox/faults")["faults"], "the fault never fired"
    assert state_counts(gp) == {"clusters": ["ai-dev"], "pools": ["default-pool", "gpu-l4"], "secret_versions": [1]}
    gp.admin.reset()
    assert gp.materialize().success
    assert gp.admin.calls()["_total"]["mutate"] == 0


# ---- 8: the fork's API list ---------------------------------------------------------------------------
def test_cloud_build_is_enabled_as_the_fork_s_terraform_enables_it(gp):
    """The seed fork's infra/gke/terraform/main.tf lists cloudbuild.googleapis.com in required_services."""
    assert gp.materialize(select=["apis_enabled"]).success
    project = next(p for p in gp.admin.call("GET", "/sandbox/projects")["projects"] if p["id"] == PROJECT)
    assert "cloudbuild.googleapis.com" in project["enabled"]
