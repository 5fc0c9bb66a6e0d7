"""The sandbox's Compute quotas and Cloud Billing Catalog, through the official REST clients."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions
from google.cloud import billing_v1, compute_v1, container_v1

from sandbox.stores import compute
from tests.conftest import admin, client_options as opts

PROJECT = "gpuplat-test"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"








def quotas(msg) -> dict[str, tuple[float, float]]:
    return {q.metric: (q.limit, q.usage) for q in msg.quotas}


def gke_with_gpu_nodes(sandbox, gpu_nodes: int) -> None:
    c = container_v1.ClusterManagerClient(**opts(sandbox, "container"))
    pool = container_v1.NodePool(name="gpu", initial_node_count=gpu_nodes,
                                 config=container_v1.NodeConfig(machine_type="g2-standard-4"))
    op = c.create_cluster(parent=PARENT, cluster=container_v1.Cluster(name="c1", node_pools=[pool]))
    for _ in range(2):
        op = c.get_operation(name=f"{PARENT}/operations/{op.name}")
    assert op.status == container_v1.Operation.Status.DONE and not op.error.message


# ---- Compute quotas ---------------------------------------------------------------------------------
def test_a_region_reports_the_sandbox_default_quotas(sandbox):
    region = compute_v1.RegionsClient(**opts(sandbox, "compute")).get(project=PROJECT, region=REGION)
    q = quotas(region)
    assert q["NVIDIA_L4_GPUS"] == (4.0, 0.0)
    assert q["NVIDIA_T4_GPUS"] == (4.0, 0.0)
    assert q["CPUS"] == (48.0, 0.0)
    assert q["PREEMPTIBLE_CPUS"] == (24.0, 0.0)
    assert region.status == "UP"
    assert any(z.endswith(f"/zones/{REGION}-a") for z in region.zones)


def test_the_project_reports_gpus_all_regions(sandbox):
    project = compute_v1.ProjectsClient(**opts(sandbox, "compute")).get(project=PROJECT)
    assert quotas(project)["GPUS_ALL_REGIONS"] == (4.0, 0.0)
    assert project.name == PROJECT


def test_usage_is_counted_from_the_live_simulated_nodes(sandbox):
    gke_with_gpu_nodes(sandbox, 2)
    region = quotas(compute_v1.RegionsClient(**opts(sandbox, "compute")).get(project=PROJECT, region=REGION))
    assert region["NVIDIA_L4_GPUS"] == (4.0, 2.0)
    assert region["CPUS"] == (48.0, 8.0)
    assert quotas(compute_v1.ProjectsClient(**opts(sandbox, "compute")).get(project=PROJECT))[
        "GPUS_ALL_REGIONS"] == (4.0, 2.0)
    with sandbox.store.lock:
        assert compute.quota(sandbox, PROJECT, REGION, "NVIDIA_L4_GPUS") == (4.0, 2.0)
        assert compute.quota(sandbox, "another-project", REGION, "NVIDIA_L4_GPUS") == (4.0, 0.0)


def test_the_admin_api_sets_regional_and_project_wide_limits(sandbox):
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": REGION, "metric": "NVIDIA_L4_GPUS",
                                              "limit": 0})
    admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "metric": "GPUS_ALL_REGIONS", "limit": 16})
    assert quotas(compute_v1.RegionsClient(**opts(sandbox, "compute")).get(project=PROJECT, region=REGION))[
        "NVIDIA_L4_GPUS"] == (0.0, 0.0)
    assert quotas(compute_v1.ProjectsClient(**opts(sandbox, "compute")).get(project=PROJECT))[
        "GPUS_ALL_REGIONS"] == (16.0, 0.0)
    with pytest.raises(urllib.error.HTTPError) as info:
        admin(sandbox, "PUT", "/sandbox/quotas", {"project": PROJECT, "metric": "NOT_A_METRIC", "limit": 1})
    assert info.value.code == 400


def test_an_unknown_region_is_not_found(sandbox):
    with pytest.raises(exceptions.NotFound):
        compute_v1.RegionsClient(**opts(sandbox, "compute")).get(project=PROJECT, region="mars-north1")


# ---- Billing Catalog -------------------------------------------------------------------------------
def test_the_catalog_lists_compute_engine(sandbox):
    catalog = billing_v1.CloudCatalogClient(**opts(sandbox, "billing"))
    services = {s.display_name: s for s in catalog.list_services()}
    assert services["Compute Engine"].name == "services/6F81-5844-456A"
    assert services["Compute Engine"].service_id == "6F81-5844-456A"


def test_skus_carry_category_regions_and_an_hourly_usd_price(sandbox):
    catalog = billing_v1.CloudCatalogClient(**opts(sandbox, "billing"))
    skus = {s.description: s for s in catalog.list_skus(parent="services/6F81-5844-456A")}
    l4 = skus["Nvidia L4 GPU running in Iowa"]
    assert l4.category.resource_family == "Compute"
    assert l4.category.resource_group == "GPU"
    assert l4.category.usage_type == "OnDemand"
    assert REGION in l4.service_regions
    expr = l4.pricing_info[0].pricing_expression
    assert expr.usage_unit == "h"
    price = expr.tiered_rates[0].unit_price
    assert price.currency_code == "USD" and price.units == 0 and price.nanos > 0
    assert skus["G2 Instance Ram running in Iowa"].pricing_info[0].pricing_expression.usage_unit == "GiBy.h"
    for desc in ("Nvidia Tesla T4 GPU running in Americas", "G2 Instance Core running in Iowa",
                 "E2 Instance Core running in Americas", "E2 Instance Ram running in Americas"):
        assert desc in skus


def test_skus_page(sandbox):
    catalog = billing_v1.CloudCatalogClient(**opts(sandbox, "billing"))
    pages = list(catalog.list_skus(request={"parent": "services/6F81-5844-456A", "page_size": 3}).pages)
    assert len(pages) >= 3 and all(len(p.skus) <= 3 for p in pages)


def test_skus_of_an_unknown_service_are_not_found(sandbox):
    catalog = billing_v1.CloudCatalogClient(**opts(sandbox, "billing"))
    with pytest.raises(exceptions.NotFound):
        list(catalog.list_skus(parent="services/0000-0000-0000"))


def test_plain_json_gets_geo_taxonomy_names_and_the_rest_client_gets_integers(sandbox):
    base = sandbox.urls()["billing"] + "/v1/services/6F81-5844-456A/skus?pageSize=1"
    with urllib.request.urlopen(base) as resp:
        assert json.loads(resp.read())["skus"][0]["geoTaxonomy"]["type"] == "MULTI_REGIONAL"
    with urllib.request.urlopen(base + "&$alt=json;enum-encoding=int") as resp:
        assert json.loads(resp.read())["skus"][0]["geoTaxonomy"]["type"] == 3
