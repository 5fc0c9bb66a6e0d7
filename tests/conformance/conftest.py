"""The real `kubectl` and `gcloud` against a sandbox, as users drive their clusters.

One sandbox process for the module; each tool runs with its own HOME (kubectl's dispatcher caches
the server version and discovery there) and the sandbox's own gcloud configuration. kubectl is the
Google Cloud SDK's dispatcher, which picks kubectl 1.33 for a 1.33 server; gcloud, kubectl and
gke-gcloud-auth-plugin come with the machine image (CI checks they are there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SandboxProcess, enable_all

TOOLS = ("kubectl", "gcloud", "gke-gcloud-auth-plugin")
PROJECT = "gpuplat-sandbox"
LOCATION = "us-central1-a"


@dataclass
class Tools:
    sandbox: SandboxProcess
    home: Path
    gcloud_config: Path
    byo_kubeconfig: Path

    def env(self, kubeconfig: Path | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "KUBECONFIG", "GOOGLE_"))}
        env.update(HOME=str(self.home), CLOUDSDK_CONFIG=str(self.gcloud_config),
                   KUBECONFIG=str(kubeconfig or self.byo_kubeconfig))
        return env

    def kubectl(self, *args: str, kubeconfig: Path | None = None, timeout: float = 60, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["kubectl", *args], env=self.env(kubeconfig), capture_output=True, text=True,
                              timeout=timeout, input=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def gcloud(self, *args: str, timeout: float = 120, check: bool = True, kubeconfig: Path | None = None):
        proc = subprocess.run(["gcloud", *args], env=self.env(kubeconfig), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"gcloud {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def admin(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.sandbox.urls["admin"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip().startswith(b"{") else raw.decode()


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH: the conformance suite drives the real tools "
                    f"(the machine image and CI have them)")
    root = tmp_path_factory.mktemp("conformance")
    sp = SandboxProcess(root / "sandbox")
    sp.start()
    enable_all(sp.urls)  # gcloud and kubectl are met on a project that has its APIs
    home = root / "home"
    home.mkdir()
    kubeconfig = root / "byo.kubeconfig"
    kubeconfig.write_text(urllib.request.urlopen(f"{sp.urls['admin']}/sandbox/kubeconfig?cluster=byo-gpu",
                                                 timeout=10).read().decode())
    try:
        yield Tools(sp, home, sp.state_dir / "gcloud", kubeconfig)
    finally:
        sp.stop()


def gke_cluster(tools: Tools, name: str) -> str:
    """A GKE cluster created through the official client, RUNNING; returns its resource name."""
    from google.cloud import container_v1 as c

    from tests.conftest import client_options

    gke = c.ClusterManagerClient(**client_options(tools.sandbox.urls, "container"))
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    op = gke.create_cluster(parent=parent, cluster=c.Cluster(name=name, node_pools=[c.NodePool(
        name="default-pool", initial_node_count=1,
        autoscaling=c.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=3))]))
    deadline = time.monotonic() + 30
    while gke.get_operation(name=f"{parent}/operations/{op.name}").status != c.Operation.Status.DONE:
        assert time.monotonic() < deadline
    return f"{parent}/clusters/{name}"
