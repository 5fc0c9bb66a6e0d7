"""Cloud Billing Catalog v1: the public price list (services and their SKUs).

Simulation: a small catalog of the SKUs the sandbox simulates (GPUs, G2/E2/N1 cores and RAM, the
GKE cluster management fee), as a data table below. Prices are illustrative, in the neighbourhood
of us-central1 on-demand list prices at the time of writing, and NOT Google's: never quote them as
real prices. The shape (service ids, categories, pricing expressions, tiered rates in
units + nanos) is the real API's, so the code reading it is the code that reads Google's catalog.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from google.cloud import billing_v1

from ..core import ApiError
from ..wire.google import emit_google, google_page
from ..wire.http import Request, Route

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

COMPUTE_SERVICE = "6F81-5844-456A"
GKE_SERVICE = "CCD8-9BF1-090E"
SERVICES = [
    {"serviceId": COMPUTE_SERVICE, "displayName": "Compute Engine"},
    {"serviceId": GKE_SERVICE, "displayName": "Kubernetes Engine"},
]
AMERICAS = ["us-central1", "us-east1", "us-east4", "us-west1", "us-west4"]
EFFECTIVE = "2025-01-01T00:00:00Z"

# (service, sku id, description, resource group, usage unit, unit description, USD per unit, regions)
# Illustrative prices (not Google's). The descriptions follow the real catalog's wording: regional SKUs
# are named by city ("... running in Iowa" is us-central1, "Virginia" us-east4; hail-is/hail
# batch/batch/cloud/gcp/driver/pricing.py lists "Nvidia L4 GPU running in Iowa", "G2 Instance Core
# running in Iowa"), older ones by continent ("Nvidia Tesla T4 GPU running in Americas", Google's
# billing export sample), the same GPU family in other words ("Nvidia Tesla A100 80GB GPU"), and Spot
# SKUs beside the on-demand ones. The region a SKU applies to is its serviceRegions, never its text.
IOWA, VIRGINIA = ["us-central1"], ["us-east4"]
SKUS = [
    (COMPUTE_SERVICE, "A1B2-0001-L4GP", "Nvidia L4 GPU running in Iowa", "GPU", "h", "hour", "0.5600", IOWA),
    (COMPUTE_SERVICE, "A1B2-0011-L4VA", "Nvidia L4 GPU running in Virginia", "GPU", "h", "hour", "0.6300", VIRGINIA),
    (COMPUTE_SERVICE, "A1B2-0002-T4GP", "Nvidia Tesla T4 GPU running in Americas", "GPU", "h", "hour", "0.3500",
     AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0003-L4SP", "Nvidia L4 GPU attached to Spot Preemptible VMs running in Iowa", "GPU",
     "h", "hour", "0.2240", IOWA),
    (COMPUTE_SERVICE, "A1B2-0012-A180", "Nvidia Tesla A100 80GB GPU running in Americas", "GPU", "h", "hour",
     "3.9300", AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0013-A100", "Nvidia Tesla A100 GPU running in Americas", "GPU", "h", "hour", "2.9300",
     AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0004-G2CR", "G2 Instance Core running in Iowa", "CPU", "h", "hour", "0.0250", IOWA),
    (COMPUTE_SERVICE, "A1B2-0014-G2SP", "Spot Preemptible G2 Instance Core running in Iowa", "CPU", "h", "hour",
     "0.0100", IOWA),
    (COMPUTE_SERVICE, "A1B2-0005-G2RM", "G2 Instance Ram running in Iowa", "RAM", "GiBy.h", "gibibyte hour",
     "0.0029", IOWA),
    (COMPUTE_SERVICE, "A1B2-0015-G2VC", "G2 Instance Core running in Virginia", "CPU", "h", "hour", "0.0282",
     VIRGINIA),
    (COMPUTE_SERVICE, "A1B2-0016-G2VR", "G2 Instance Ram running in Virginia", "RAM", "GiBy.h", "gibibyte hour",
     "0.0033", VIRGINIA),
    (COMPUTE_SERVICE, "A1B2-0006-E2CR", "E2 Instance Core running in Americas", "CPU", "h", "hour", "0.0218",
     AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0007-E2RM", "E2 Instance Ram running in Americas", "RAM", "GiBy.h", "gibibyte hour",
     "0.0029", AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0008-N1CR", "N1 Predefined Instance Core running in Americas", "CPU", "h", "hour", "0.0316",
     AMERICAS),
    (COMPUTE_SERVICE, "A1B2-0009-N1RM", "N1 Predefined Instance Ram running in Americas", "RAM", "GiBy.h",
     "gibibyte hour", "0.0042", AMERICAS),
    # What outlives a cluster (infracost's compute_forwarding_rule.go, compute_address.go and disk SKUs).
    (COMPUTE_SERVICE, "A1B2-0017-FRMN", "Network Load Balancing: Forwarding Rule Minimum Service Charge in Iowa",
     "LoadBalancing", "h", "hour", "0.0250", IOWA),
    (COMPUTE_SERVICE, "A1B2-0018-SIPC", "Static Ip Charge", "IpAddress", "h", "hour", "0.0100", ["global"]),
    (COMPUTE_SERVICE, "A1B2-0019-BPDC", "Balanced PD Capacity in Iowa", "SSD", "GiBy.mo", "gibibyte month",
     "0.1000", IOWA),
    (COMPUTE_SERVICE, "A1B2-0020-SPDC", "Storage PD Capacity in Iowa", "PDStandard", "GiBy.mo", "gibibyte month",
     "0.0400", IOWA),
    (COMPUTE_SERVICE, "A1B2-0021-SSDC", "SSD backed PD Capacity in Iowa", "SSD", "GiBy.mo", "gibibyte month",
     "0.1700", IOWA),
    # The cluster management fee is global (infracost container_cluster.go; SKU 6B92-A835-08AB / B561-BFBD-1264).
    (GKE_SERVICE, "A1B2-0010-GKEF", "Regional Kubernetes Clusters", "Kubernetes", "h", "hour", "0.1000", ["global"]),
    (GKE_SERVICE, "A1B2-0022-GKEZ", "Zonal Kubernetes Clusters", "Kubernetes", "h", "hour", "0.1000", ["global"]),
]


def _money(usd: str) -> dict:
    amount = Decimal(usd)
    units = int(amount)
    nanos = int((amount - units) * 1_000_000_000)
    return {"currencyCode": "USD", "units": str(units), "nanos": nanos}


def _sku(row) -> dict:
    service, sku_id, desc, group, unit, unit_desc, price, regions = row
    display = next(s["displayName"] for s in SERVICES if s["serviceId"] == service)
    hourly = unit == "h"
    return {
        "name": f"services/{service}/skus/{sku_id}",
        "skuId": sku_id,
        "description": desc,
        "category": {"serviceDisplayName": display,
                     "resourceFamily": "Compute" if service == COMPUTE_SERVICE else "Compute",
                     "resourceGroup": group,
                     "usageType": "Preemptible" if "Spot" in desc else "OnDemand"},
        "serviceRegions": list(regions),
        "pricingInfo": [{
            "summary": "",
            "effectiveTime": EFFECTIVE,
            "pricingExpression": {
                "usageUnit": unit, "displayQuantity": 1, "usageUnitDescription": unit_desc,
                "baseUnit": "s" if hourly else "By.s",
                "baseUnitDescription": "second" if hourly else "byte second",
                "baseUnitConversionFactor": 3600 if hourly else (3600 if unit == "GiBy.h" else 2629800) * 2 ** 30,
                "tieredRates": [{"startUsageAmount": 0, "unitPrice": _money(price)}],
            },
            "currencyConversionRate": 1,
        }],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL", "regions": list(regions)},
    }


def list_services(sb: "Sandbox", req: Request):
    services = [{"name": f"services/{s['serviceId']}", "serviceId": s["serviceId"], "displayName": s["displayName"],
                 "businessEntityName": "businessEntities/GCP"} for s in SERVICES]
    chunk, token = google_page(req, services, 5000, 5000)
    return emit_google(req, billing_v1.ListServicesResponse, {"services": chunk, "nextPageToken": token})


def list_skus(sb: "Sandbox", req: Request):
    service = req.match["service"]
    if service not in {s["serviceId"] for s in SERVICES}:
        raise ApiError(404, f"Service services/{service} not found.")
    currency = req.param("currencyCode")
    if currency not in (None, "", "USD"):
        raise ApiError(400, f"The sandbox catalog is priced in USD only, not {currency}.")
    skus = [_sku(row) for row in SKUS if row[0] == service]
    chunk, token = google_page(req, skus, 5000, 5000)
    return emit_google(req, billing_v1.ListSkusResponse, {"skus": chunk, "nextPageToken": token})


ROUTES = [
    Route("GET", r"/v1/services", list_services, "ListServices"),
    Route("GET", r"/v1/services/(?P<service>[^/]+)/skus", list_skus, "ListSkus"),
]
