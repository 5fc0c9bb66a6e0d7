"""Matching the Cloud Billing Catalog's SKU descriptions as Google really writes them.

The descriptions below are verbatim from public code that reads the real catalog: hail-is/hail
`batch/batch/cloud/gcp/driver/pricing.py` (SKU ids A88A-5A60-E821, D18E-3563-415F, F0A4-E3D3-33BD,
AEC2-3D5C-61BF, 59A6-9C49-BDDB: "... running in Iowa") and infracost/infracost
`internal/resources/google/compute_cost_component_helpers.go` ("Nvidia Tesla T4 GPU", "Nvidia Tesla A100
GPU"); "N1 Predefined Instance Core running in Americas" is from Google's billing export sample.
"""

from __future__ import annotations

import pytest

from substrate.prices import accelerator_sku_name, price_from_catalog, quantity
from resources.models import SkuPrice

REAL = [
    SkuPrice("Nvidia L4 GPU attached to Spot Preemptible VMs running in Iowa", 0.22, "USD", "h"),
    SkuPrice("Spot Preemptible G2 Instance Core running in Iowa", 0.01, "USD", "h"),
    SkuPrice("Nvidia L4 GPU running in Iowa", 0.56, "USD", "h"),
    SkuPrice("G2 Instance Core running in Iowa", 0.025, "USD", "h"),
    SkuPrice("G2 Instance Ram running in Iowa", 0.003, "USD", "GiBy.h"),
    SkuPrice("Nvidia Tesla A100 80GB GPU running in Americas", 3.9, "USD", "h"),
    SkuPrice("Nvidia Tesla A100 GPU running in Americas", 2.9, "USD", "h"),
    SkuPrice("Nvidia Tesla T4 GPU running in Americas", 0.35, "USD", "h"),
    SkuPrice("N1 Predefined Instance Core running in Americas", 0.03, "USD", "h"),
    SkuPrice("N1 Predefined Instance Ram running in Americas", 0.004, "USD", "GiBy.h"),
    SkuPrice("A2 Instance Core running in Americas", 0.03, "USD", "h"),
    SkuPrice("A2 Instance Ram running in Americas", 0.004, "USD", "GiBy.h"),
]


def test_the_on_demand_l4_node_is_priced_from_city_named_skus_never_the_spot_ones():
    price = price_from_catalog(REAL, "us-central1", "g2-standard-4", "nvidia-l4", 1, 4, 16)
    assert price.per_hour == pytest.approx(0.56 + 4 * 0.025 + 16 * 0.003)
    assert "Nvidia L4 GPU running in Iowa" in price.source and "Spot" not in price.source


@pytest.mark.parametrize("accelerator, machine, gpu", [
    ("nvidia-a100-80gb", "a2-ultragpu-1g", 3.9), ("nvidia-tesla-a100", "a2-highgpu-1g", 2.9),
    ("nvidia-tesla-t4", "n1-standard-4", 0.35)])
def test_the_same_family_in_other_words_is_told_apart(accelerator, machine, gpu):
    """Exactly the GPU's own SKU plus 12 cores and 85 GiB at the family's prices (A2 and N1 both 0.03 and
    0.004 here): the A100 80GB priced from the 40GB SKU, or the other way round, is 1.0 off."""
    price = price_from_catalog(REAL, "us-central1", machine, accelerator, 1, 12, 85)
    assert price.per_hour == pytest.approx(gpu + 12 * 0.03 + 85 * 0.004)


def test_case_and_spacing_do_not_matter():
    shouted = [SkuPrice(s.description.upper().replace(" GPU", "  GPU"), s.per_hour, s.currency, s.unit) for s in REAL]
    assert price_from_catalog(shouted, "us-central1", "g2-standard-4", "nvidia-l4", 1, 4, 16).per_hour == \
        price_from_catalog(REAL, "us-central1", "g2-standard-4", "nvidia-l4", 1, 4, 16).per_hour


def test_a_gpu_the_catalog_does_not_list_is_unknown_and_says_which_sku():
    price = price_from_catalog(REAL, "us-central1", "a3-highgpu-1g", "nvidia-h100-80gb", 1, 26, 234)
    assert price.per_hour is None and '"Nvidia H100 80GB GPU"' in price.source and "A3 instance core" in price.source
    assert accelerator_sku_name("nvidia-tesla-t4") == "Nvidia Tesla T4 GPU"


@pytest.mark.parametrize("q, value", [("3920m", 3.92), ("13948519Ki", 13948519 * 1024), ("1", 1), ("", 0),
                                      ("16Gi", 16 * 2**30)])
def test_kubernetes_quantities(q, value):
    assert quantity(q) == pytest.approx(value)
