"""kubectl against a sandbox cluster prints what it prints against kube-apiserver.

Each test names the real behaviour it checks; the protocol facts behind them (protobuf request bodies
from typed clients since client-go 0.32, Table answers for `get`, watch streams, the scale
subresource, self-reviews) are in the docstrings of the sandbox modules that implement them
(`sandbox/wire/kubeproto.py`, `sandbox/apis/kube_tables.py`, `kube_watch.py`, `kube_subresources.py`).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest


def header(output: str) -> list[str]:
    return re.split(r"\s{2,}", output.splitlines()[0].strip())


# ---- the seed's target gate and raw paths -----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/readyz", "/livez", "/healthz"])
def test_raw_health_paths_answer_ok_as_the_seeds_kube_target_gate_needs(tools, path):
    """scripts/kube-target.sh gates every target on `kubectl --request-timeout=5s get --raw=/readyz`;
    health endpoints answer `ok` (https://kubernetes.io/docs/reference/using-api/health-checks/)."""
    assert tools.kubectl("--request-timeout=5s", "get", f"--raw={path}").stdout == "ok"


def test_readyz_verbose_lists_its_checks(tools):
    out = tools.kubectl("get", "--raw", "/readyz?verbose").stdout.splitlines()
    assert out[0] == "[+]ping ok" and "[+]etcd ok" in out and out[-1] == "readyz check passed"


def test_version_names_the_server_and_kubectl_matches_it(tools):
    out = tools.kubectl("version").stdout
    assert "Client Version: v1.33" in out and "Server Version: v1.33" in out


# ---- create: protobuf bodies ----------------------------------------------------------------------------
def test_kubectl_create_sends_protobuf_and_the_objects_are_stored(tools):
    """kubectl 1.33 creates built-in kinds with protobuf bodies and has no JSON fallback after a 415."""
    assert tools.kubectl("create", "namespace", "conf").stdout.strip() == "namespace/conf created"
    assert tools.kubectl("create", "configmap", "c", "--from-literal=a=b", "-n", "conf").stdout.strip() == \
        "configmap/c created"
    assert tools.kubectl("create", "secret", "generic", "s", "--from-literal=k=v", "-n", "conf").stdout.strip() == \
        "secret/s created"
    assert tools.kubectl("create", "deployment", "web", "--image=nginx", "-n", "conf").stdout.strip() == \
        "deployment.apps/web created"
    assert tools.kubectl("get", "configmap", "c", "-n", "conf", "-o", "jsonpath={.data.a}").stdout == "b"
    assert tools.kubectl("get", "secret", "s", "-n", "conf", "-o", "jsonpath={.type} {.data.k}").stdout == "Opaque dg=="
    image = tools.kubectl("get", "deployment", "web", "-n", "conf",
                          "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}").stdout
    assert image == "1 nginx"


# ---- get: Tables -----------------------------------------------------------------------------------------
def test_get_prints_the_real_default_columns_and_wide_adds_the_priority_one_columns(tools):
    assert header(tools.kubectl("get", "nodes").stdout) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    wide = header(tools.kubectl("get", "nodes", "-o", "wide").stdout)
    assert wide == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
                    "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    nodes = tools.kubectl("get", "nodes", "--no-headers").stdout.splitlines()
    assert any(re.match(r"byo-control-plane-1\s+Ready\s+control-plane\s+\d+[smhd]", line) for line in nodes)
    assert header(tools.kubectl("get", "namespaces").stdout) == ["NAME", "STATUS", "AGE"]
    assert header(tools.kubectl("get", "storageclasses").stdout) == [
        "NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]


def test_get_deployments_and_pods_read_like_a_real_cluster(tools):
    tools.kubectl("create", "namespace", "tables")
    tools.kubectl("create", "deployment", "api", "--image=nginx", "-n", "tables")
    assert header(tools.kubectl("get", "deployments", "-n", "tables").stdout) == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    tools.kubectl("run", "p", "--image=busybox", "-n", "tables")
    tools.kubectl("wait", "--for=condition=Ready", "pod/p", "-n", "tables", "--timeout=30s")
    out = tools.kubectl("get", "pods", "-n", "tables").stdout
    assert header(out) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert re.search(r"^p\s+1/1\s+Running\s+0\s+\d+s", out, re.M)


def test_argo_cd_applications_show_sync_and_health_columns_as_the_seeds_verify_reads_them(tools):
    """Argo CD's Application CRD declares additionalPrinterColumns Sync Status and Health Status;
    the seed's verify.sh reads them from `kubectl get applications -n argocd`."""
    crd = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: applications.argoproj.io}
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Application, listKind: ApplicationList, plural: applications, singular: application}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    additionalPrinterColumns:
    - {jsonPath: .status.sync.status, name: Sync Status, type: string}
    - {jsonPath: .status.health.status, name: Health Status, type: string}
    - {jsonPath: .status.sync.revision, name: Revision, priority: 10, type: string}
"""
    tools.kubectl("apply", "-f", "-", stdin=crd)
    tools.kubectl("create", "namespace", "argocd")
    app = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: demo, namespace: argocd}
spec: {project: default, destination: {server: https://kubernetes.default.svc}, syncPolicy: {automated: {}}}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: dormant, namespace: argocd}
spec: {project: default, destination: {server: https://kubernetes.default.svc}}
"""
    tools.kubectl("apply", "--server-side", "-f", "-", stdin=app)
    out = tools.kubectl("get", "applications", "-n", "argocd").stdout
    assert header(out) == ["NAME", "SYNC STATUS", "HEALTH STATUS"]
    assert re.search(r"^demo\s+Synced\s+Healthy\s*$", out, re.M)
    # A manual-sync Application nobody synced: what Argo CD shows for the seed's dormant apps.
    assert re.search(r"^dormant\s+OutOfSync\s+Missing\s*$", out, re.M)
    assert "REVISION" in header(tools.kubectl("get", "applications", "-n", "argocd", "-o", "wide").stdout)


# ---- watch and wait -----------------------------------------------------------------------------------------
def test_get_watch_stays_open_and_prints_new_objects(tools):
    tools.kubectl("create", "namespace", "watched")
    proc = subprocess.Popen(["kubectl", "get", "pods", "-n", "watched", "-w"], env=tools.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        tools.kubectl("run", "late", "--image=busybox", "-n", "watched")
        time.sleep(2)
        assert proc.poll() is None  # still watching: the stream did not close
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert re.search(r"^late\s+\d/1\s+\w+", out, re.M), out + err


def test_wait_for_a_condition_without_a_short_watch_warning(tools):
    """client-go logs "very short watch ... Unexpected watch close" when a watch ends within a second
    with no events (tools/cache/reflector.go); the sandbox keeps watches open until timeoutSeconds."""
    tools.kubectl("create", "namespace", "waiting")
    tools.kubectl("create", "deployment", "w", "--image=nginx", "-n", "waiting")
    holder = {}

    def scale_later():
        time.sleep(2)
        holder["scaled"] = tools.kubectl("scale", "deployment", "w", "--replicas=2", "-n", "waiting")
    t = threading.Thread(target=scale_later)
    t.start()
    proc = tools.kubectl("wait", "--for=jsonpath={.spec.replicas}=2", "deployment/w", "-n", "waiting",
                         "--timeout=30s")
    t.join()
    assert proc.stdout.strip() == "deployment.apps/w condition met"
    assert "very short watch" not in proc.stderr and "Unexpected watch close" not in proc.stderr


# ---- scale, auth, events, describe, logs ----------------------------------------------------------------------
def test_scale_uses_the_scale_subresource(tools):
    tools.kubectl("create", "namespace", "scaling")
    tools.kubectl("create", "deployment", "s", "--image=nginx", "-n", "scaling")
    assert tools.kubectl("scale", "deployment", "s", "--replicas=3", "-n", "scaling").stdout.strip() == \
        "deployment.apps/s scaled"
    assert tools.kubectl("get", "deployment", "s", "-n", "scaling", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    # --current-replicas: kubectl GETs /scale, checks it, then PUTs a Scale without a Content-Type.
    tools.kubectl("scale", "deployment", "s", "--replicas=5", "--current-replicas=3", "-n", "scaling")
    bad = tools.kubectl("scale", "deployment", "s", "--replicas=6", "--current-replicas=1", "-n", "scaling",
                        check=False)
    assert bad.returncode == 1 and "Expected replicas to be 1, was 5" in bad.stderr


def test_auth_can_i_and_whoami(tools):
    assert tools.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    whoami = tools.kubectl("auth", "whoami").stdout
    assert re.search(r"Username\s+kubernetes-admin", whoami) and "system:masters" in whoami


def test_events_describe_node_and_logs(tools):
    tools.kubectl("create", "namespace", "described")
    tools.kubectl("run", "e", "--image=busybox", "-n", "described")
    tools.kubectl("wait", "--for=condition=Ready", "pod/e", "-n", "described", "--timeout=30s")
    events = tools.kubectl("get", "events", "-n", "described").stdout
    assert header(events) == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert re.search(r"Normal\s+Scheduled\s+pod/e\s+Successfully assigned described/e to ", events)
    node = tools.kubectl("get", "pod", "e", "-n", "described", "-o", "jsonpath={.spec.nodeName}").stdout
    described = tools.kubectl("describe", "node", node).stdout
    assert re.search(rf"HolderIdentity:\s+{node}", described) and "Non-terminated Pods:" in described
    logs = tools.kubectl("logs", "pod/e", "-n", "described").stdout  # what the API's log subresource serves
    assert logs == tools.kubectl("get", "--raw", "/api/v1/namespaces/described/pods/e/log").stdout


# ---- apply and diff ---------------------------------------------------------------------------------------------
def test_apply_client_side_and_server_side_and_diff(tools):
    tools.kubectl("create", "namespace", "applied")
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: applied}\ndata: {a: \"%s\"}\n"
    assert tools.kubectl("apply", "-f", "-", stdin=manifest % 1).stdout.strip() == "configmap/cfg created"
    assert tools.kubectl("apply", "-f", "-", stdin=manifest % 1).stdout.strip() == "configmap/cfg unchanged"
    diff = tools.kubectl("diff", "-f", "-", stdin=manifest % 2, check=False)
    assert diff.returncode == 1 and '-  a: "1"' in diff.stdout and '+  a: "2"' in diff.stdout
    assert tools.kubectl("apply", "-f", "-", stdin=manifest % 2).stdout.strip() == "configmap/cfg configured"
    assert tools.kubectl("diff", "-f", "-", stdin=manifest % 2, check=False).returncode == 0
    ssa = tools.kubectl("apply", "--server-side", "-f", "-", stdin=manifest % 3).stdout.strip()
    assert ssa == "configmap/cfg serverside-applied"
    assert tools.kubectl("get", "configmap", "cfg", "-n", "applied", "-o", "jsonpath={.data.a}").stdout == "3"


def test_api_resources_lists_built_ins_and_the_reviews(tools):
    out = tools.kubectl("api-resources").stdout
    assert header(out) == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    for kind in ("Deployment", "Lease", "SelfSubjectAccessReview", "SelfSubjectReview", "StorageClass"):
        assert re.search(rf"\s{kind}\s*$", out, re.M), kind
