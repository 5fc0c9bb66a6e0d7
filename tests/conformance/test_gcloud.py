"""gcloud against the sandbox, with the configuration the sandbox writes (`<state dir>/gcloud`).

gcloud reaches every API through `api_endpoint_overrides/<api>` and authenticates with
`auth/access_token_file`; gke-gcloud-auth-plugin asks `gcloud config config-helper` for that token
when kubectl runs (https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl).
"""

from __future__ import annotations

import re

import yaml

from .conftest import LOCATION, PROJECT, gke_cluster


def test_get_credentials_writes_a_kubeconfig_kubectl_uses_as_it_is(tools, tmp_path):
    """get-credentials writes server https://<endpoint> and masterAuth.clusterCaCertificate; kubectl then
    runs gke-gcloud-auth-plugin, which hands it the token gcloud has."""
    gke_cluster(tools, "conf-a")
    listed = tools.gcloud("container", "clusters", "list").stdout
    assert re.search(rf"^conf-a\s+{LOCATION}\s+1\.33\.5-gke\.\d+\s+127\.0\.0\.1:\d+\s", listed, re.M), listed
    kubeconfig = tmp_path / "kubeconfig"
    got = tools.gcloud("container", "clusters", "get-credentials", "conf-a", "--location", LOCATION,
                       kubeconfig=kubeconfig)
    assert "kubeconfig entry generated for conf-a." in got.stderr
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://127.0.0.1:") and cluster["certificate-authority-data"]
    assert doc["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert doc["current-context"] == f"gke_{PROJECT}_{LOCATION}_conf-a"
    nodes = tools.kubectl("get", "nodes", kubeconfig=kubeconfig).stdout
    assert re.search(r"^gke-conf-a-default-pool-\S+\s+Ready\s+<none>\s+\S+\s+v1\.33\.5-gke\.\d+", nodes, re.M), nodes
    version = tools.kubectl("version", kubeconfig=kubeconfig).stdout
    assert re.search(r"Server Version: v1\.33\.5-gke\.\d+", version), version  # GKE's build suffix


def test_node_pools_and_clusters_are_deleted_through_operations(tools, tmp_path):
    """DeleteNodePool and DeleteCluster return operations gcloud polls until DONE; the cluster's API
    goes away with it."""
    gke_cluster(tools, "conf-b")
    assert "default-pool" in tools.gcloud("container", "node-pools", "list", "--cluster", "conf-b",
                                          "--location", LOCATION).stdout
    deleted = tools.gcloud("container", "node-pools", "delete", "default-pool", "--cluster", "conf-b",
                           "--location", LOCATION, "--quiet")
    assert "Deleted [" in deleted.stderr and "nodePools/default-pool]" in deleted.stderr
    assert tools.gcloud("container", "node-pools", "list", "--cluster", "conf-b", "--location", LOCATION,
                        "--format=value(name)").stdout.strip() == ""
    kubeconfig = tmp_path / "kubeconfig"
    tools.gcloud("container", "clusters", "get-credentials", "conf-b", "--location", LOCATION, kubeconfig=kubeconfig)
    tools.gcloud("container", "clusters", "delete", "conf-b", "--location", LOCATION, "--quiet")
    names = tools.gcloud("container", "clusters", "list", "--format=value(name)").stdout.split()
    assert "conf-b" not in names
    gone = tools.kubectl("--request-timeout=5s", "get", "--raw=/readyz", kubeconfig=kubeconfig, check=False)
    assert gone.returncode != 0


def test_compute_leftover_lists_answer_empty_instead_of_404(tools):
    """The seed's pause.sh audits forwarding rules, addresses and disks with `gcloud compute ... list`
    (aggregatedList): an empty project answers `Listed 0 items.`"""
    for collection in ("forwarding-rules", "addresses", "disks"):
        out = tools.gcloud("compute", collection, "list")
        assert "Listed 0 items." in out.stderr, (collection, out.stderr)
    filtered = tools.gcloud("compute", "disks", "list", "--filter=name~pvc")
    assert "Listed 0 items." in filtered.stderr
