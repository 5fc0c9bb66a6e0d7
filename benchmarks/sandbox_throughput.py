"""Sandbox throughput through the official clients: calls per second, median of 3 runs.

Starts an in-process sandbox on free ports (state in a temporary directory), creates a GKE cluster
with a node pool and a secret with a version, then times, each with one client over a kept-alive
connection:

- GKE `ClusterManagerClient.get_cluster` (REST transport),
- Secret Manager `SecretManagerServiceClient.access_secret_version` (REST transport),
- kubernetes `CoreV1Api.list_node` on the cluster created through GKE.

Client and server share this process (and its GIL), so the figures are a floor for a separate
sandbox process. Target: >= 300 calls/s each.

    python benchmarks/sandbox_throughput.py [--seconds 2] [--nodes 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import container_v1, secretmanager_v1  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from sandbox.app import EPHEMERAL_PORTS, Sandbox  # noqa: E402

PROJECT = "bench"
PARENT = f"projects/{PROJECT}/locations/us-central1"
CLUSTER = f"{PARENT}/clusters/bench"
TARGET = 300.0
PORTS = EPHEMERAL_PORTS


def opts(url: str) -> dict:
    return {"transport": "rest", "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=url)}


def rate(call, seconds: float) -> float:
    for _ in range(20):  # warm the connection and caches
        call()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        call()
        n += 1
    return n / elapsed


def setup(sb: Sandbox, nodes: int, workdir: Path):
    urls = sb.urls()
    # A new project answers SERVICE_DISABLED until its APIs are enabled, as a real one does.
    from google.cloud import service_usage_v1
    usage = service_usage_v1.ServiceUsageClient(**opts(urls["serviceusage"]))
    usage.batch_enable_services(request={"parent": f"projects/{PROJECT}", "service_ids": [
        "container.googleapis.com", "secretmanager.googleapis.com"]}).result(timeout=30)
    gke = container_v1.ClusterManagerClient(**opts(urls["container"]))
    pool = container_v1.NodePool(name="system", initial_node_count=nodes,
                                 config=container_v1.NodeConfig(machine_type="e2-standard-4"))
    op = gke.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name="bench", node_pools=[pool]))
    while op.status != container_v1.Operation.Status.DONE:
        op = gke.get_operation(name=f"{PARENT}/operations/{op.name}")
    sm = secretmanager_v1.SecretManagerServiceClient(**opts(urls["secretmanager"]))
    secret = sm.create_secret(parent=f"projects/{PROJECT}", secret_id="bench", secret=secretmanager_v1.Secret(
        replication=secretmanager_v1.Replication(automatic=secretmanager_v1.Replication.Automatic())))
    sm.add_secret_version(parent=secret.name, payload=secretmanager_v1.SecretPayload(data=b"benchmark"))
    with urllib.request.urlopen(f"{urls['admin']}/sandbox/kubeconfig?cluster={CLUSTER}") as resp:
        (workdir / "kubeconfig").write_text(resp.read().decode())
    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(workdir / "kubeconfig"),
                                                           persist_config=False))
    assert len(core.list_node().items) == nodes
    return {
        "gke get_cluster": lambda: gke.get_cluster(name=CLUSTER),
        "secretmanager access_secret_version": lambda: sm.access_secret_version(
            name=f"{secret.name}/versions/latest"),
        "kubernetes list_node": lambda: core.list_node(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="duration of one run (default 2)")
    p.add_argument("--nodes", type=int, default=3, help="nodes in the benchmark cluster (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(Path(tmp) / "state", ports=PORTS)
        sb.start()
        try:
            calls = setup(sb, args.nodes, Path(tmp))
            results = {}
            for name, call in calls.items():
                runs = [rate(call, args.seconds) for _ in range(3)]
                results[name] = {"median_calls_per_s": round(statistics.median(runs), 1),
                                 "runs": [round(r, 1) for r in runs]}
        finally:
            sb.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            verdict = "ok" if r["median_calls_per_s"] >= TARGET else f"below target {TARGET:.0f}"
            print(f"{name:40s} {r['median_calls_per_s']:8.1f} calls/s  (runs {r['runs']})  {verdict}")
    return 0 if all(r["median_calls_per_s"] >= TARGET for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
