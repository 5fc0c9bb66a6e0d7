"""Grow a benchmark fleet by copying one materialized GKE environment's sandbox state.

Materializing 500 environments one by one takes this 2-core machine about half an hour; what a drift
tick observes of each is the same for all of them (its GKE cluster and pools, its node service account
and that account's role bindings, its Kubernetes objects). So the benchmark materializes a few for
real and copies the last one's state, with the cluster's name changed, for the others, while the
sandbox is stopped: each copy gets its own cluster id, node account identity and API port, and the
sandbox serves it as it would one it had created. The copies share the template's CA (the cluster's
`masterAuth` names it, so clients verify it as they would any). The first tick over the fleet must
find every environment in sync, which the benchmark asserts.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
from pathlib import Path

from sandbox.core import StateStore


def _renamer(renames: dict[str, str]):
    # Only a name as a whole word (`gke-c-001-nodes`, `gke_bench_us-central1-a_c-001`,
    # `clusters/env-001/...`), never a hash or a longer name that contains it.
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, renames)) + r")(?![0-9A-Za-z])")
    return lambda obj: json.loads(pattern.sub(lambda m: renames[m.group(1)], json.dumps(obj)))


def _free_ports(taken: set[int], count: int, low: int = 20000, high: int = 32767) -> list[int]:
    """Ports below the kernel's ephemeral range that nothing listens on now (where the sandbox puts
    clusters' APIs: sandbox/app.py _on_a_kube_port)."""
    out = []
    for port in range(low, high + 1):
        if len(out) == count:
            return out
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        out.append(port)
    raise RuntimeError(f"only {len(out)} free ports in {low}-{high}, {count} needed")


def clone_clusters(state_dir: Path, project: str, location: str, template: tuple[str, str],
                   copies: list[tuple[str, str]]) -> None:
    """Copy the GKE cluster of `project`/`location` that `template` (cluster name, environment name) names
    as each of `copies` (the same pairs) in the stopped sandbox's state at `state_dir`: the environment's
    name is in its Argo CD objects (the fork's `clusters/<env>/` paths)."""
    template, template_env = template
    store = StateStore(state_dir)
    state = store.data
    gke, iam, kube, ports = state["gke"], state["iam"], state["kube"], state["kube_ports"]
    prefix = f"projects/{project}/locations/{location}/clusters/"
    kube_id = f"gke_{project}_{location}_{{}}"
    account = f"gke-{{}}-nodes@{project}.iam.gserviceaccount.com"
    cluster = gke["clusters"][prefix + template]
    pools = {k: v for k, v in gke["internal"].items() if k.startswith(f"{prefix}{template}/")}
    members = f"serviceAccount:{account.format(template)}"
    bindings = [b for policy in iam["policies"].values() for b in policy.get("bindings", [])
                if members in b.get("members", [])]
    new_ports = _free_ports(set(ports.values()), len(copies))
    for (name, env), port in zip(copies, new_ports):
        rename = _renamer({template: name, template_env: env})
        copy = rename(cluster)
        copy["id"] = secrets.token_hex(16)
        copy["endpoint"] = f"127.0.0.1:{port}"
        gke["clusters"][prefix + name] = copy
        for key, pool in pools.items():
            gke["internal"][key.replace(f"{prefix}{template}/", f"{prefix}{name}/", 1)] = rename(pool)
        if account.format(template) in iam["accounts"]:
            sa = rename(iam["accounts"][account.format(template)])
            sa["uniqueId"] = sa["oauth2ClientId"] = str(10 ** 20 + secrets.randbelow(10 ** 20))
            iam["accounts"][account.format(name)] = sa
        for binding in bindings:
            binding["members"].append(f"serviceAccount:{account.format(name)}")
        kube[kube_id.format(name)] = rename(kube[kube_id.format(template)])
        ports[kube_id.format(name)] = port
        tls = state_dir / "tls"
        shutil.copytree(tls / kube_id.format(template), tls / kube_id.format(name), dirs_exist_ok=True)
    store.mark()
    store.save_if_dirty()
    store.release()
