"""What a GPU node costs per hour: the Cloud Billing Catalog on GKE, `substrate.prices` elsewhere.

The catalog is large (thousands of Compute Engine SKUs, many pages) and changes rarely, so it is read
in a background thread and kept for an hour per region; a sensor tick that finds it cold waits a few
seconds at most and otherwise says the price is still loading (a tick must stay well under Dagster's
60 s). SKU descriptions are matched by their words, not their spelling: real ones vary in case and
wording ("Nvidia L4 GPU running in Iowa", "Nvidia Tesla A100 80GB GPU running in Americas", "N1
Predefined Instance Core running in Americas"); the region is the SKU's `service_regions`, never the
city in the text.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from resources.errors import GpuplatError
from resources.models import Leftover, NodeState, SkuPrice

from .piece import Run

PRICE_TTL_S = 3600.0
# How long a tick waits for a cold catalog before answering "loading".
COLD_WAIT_S = 5.0
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU = "nvidia.com/gpu"
# Words of a GPU SKU's description that do not name the GPU.
_FILLER = {"nvidia", "tesla", "gpu", "gpus"}


@dataclass(frozen=True)
class NodePrice:
    """What one GPU node costs per hour, and where that number comes from (None: unknown, and why)."""

    per_hour: float | None
    currency: str
    source: str


def node_price(run: Run, node: NodeState) -> NodePrice:
    """On GKE from the Cloud Billing Catalog; elsewhere from substrate.prices in the config."""
    env = run.env
    if not env.is_gke:
        prices = env.substrate.prices
        if prices.gpu_node_per_hour is None:
            return NodePrice(None, prices.currency, f"no price known: set substrate.prices.gpu_node_per_hour in "
                                                    f"{env.path or 'the environment config'}")
        return NodePrice(prices.gpu_node_per_hour, prices.currency, "substrate.prices.gpu_node_per_hour")
    gp = env.substrate.gpu_pool
    machine = node.labels.get(INSTANCE_TYPE_LABEL) or gp.machine_type
    accelerator = node.labels.get(ACCELERATOR_LABEL) or gp.accelerator_type
    gpus = int(quantity(node.allocatable.get(GPU)) or gp.accelerator_count)
    try:
        skus = CATALOG.prices(run.conn.google, env.region)
    except GpuplatError as exc:
        text = exc.line()
        return NodePrice(None, "", f"no price known: the Cloud Billing Catalog could not be read ({text})")
    if skus is None:
        return NodePrice(None, "", "price loading: the Cloud Billing Catalog is being read in the background; a later "
                                   "tick knows it")
    return price_from_catalog(skus, env.region, machine, accelerator, gpus, quantity(node.capacity.get("cpu")),
                              quantity(node.capacity.get("memory")) / 2**30)


def find_sku(run: Run, *phrases: str) -> SkuPrice | None:
    """The first catalog SKU whose description contains one of `phrases` (lower case, spaces
    collapsed), or None when none does or the catalog cannot be read (yet)."""
    try:
        skus = CATALOG.prices(run.conn.google, run.env.region)
    except GpuplatError:
        return None
    for sku in skus or ():
        text = " ".join(sku.description.lower().split())
        if any(p in text for p in phrases):
            return sku
    return None


HOURS_PER_MONTH = 730


def leftover_price(run: Run, x: Leftover) -> tuple[float | None, str]:
    """What a disk, address or forwarding rule costs per hour (a disk's SKU is per GiB-month), and the
    currency; (None, "") when the catalog does not say."""
    phrases = {"forwarding rule": ("forwarding rule minimum",), "address": ("static ip charge",),
               "disk": {"pd-balanced": ("balanced pd capacity",), "pd-ssd": ("ssd backed pd capacity",)}
               .get(x.disk_type, ("storage pd capacity",))}[x.kind]
    sku = find_sku(run, *phrases)
    if sku is None:
        return None, ""
    return (sku.per_hour * x.size_gb / HOURS_PER_MONTH if x.kind == "disk" else sku.per_hour), sku.currency


@dataclass
class Cost:
    """A sum of priced parts, one line each, and the parts the catalog could not price."""

    per_hour: float = 0.0
    currency: str = ""
    lines: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def add(self, what: str, per_hour: float | None, currency: str, why: str = "") -> None:
        if per_hour is None:
            self.unknown.append(f"{what}{f' ({why})' if why else ''}")
            return
        self.per_hour += per_hour
        self.currency = self.currency or currency
        self.lines.append(f"{what}: {per_hour:.4f}/h")


def cluster_cost(run: Run, nodes: list[NodeState], zonal: bool, wait: float = COLD_WAIT_S) -> Cost | str:
    """GKE's cluster fee and every node (GPU and CPU) from the Billing Catalog, or why no price is known."""
    try:
        skus = CATALOG.prices(run.conn.google, run.env.region, wait=wait)
    except GpuplatError as exc:
        text = exc.line()
        return f"prices unavailable: {text}"
    if skus is None:
        return "prices unavailable: the Cloud Billing Catalog is still loading"
    cost = Cost()
    fee = find_sku(run, "zonal kubernetes clusters" if zonal else "regional kubernetes clusters")
    cost.add(fee.description if fee else "the GKE cluster fee", fee.per_hour if fee else None,
             fee.currency if fee else "")
    for node in nodes:
        price = price_from_catalog(skus, run.env.region, node.labels.get(INSTANCE_TYPE_LABEL, ""),
                                   node.labels.get(ACCELERATOR_LABEL, ""), int(quantity(node.allocatable.get(GPU))),
                                   quantity(node.capacity.get("cpu")), quantity(node.capacity.get("memory")) / 2**30)
        cost.add(f"node {node.name} ({node.labels.get(INSTANCE_TYPE_LABEL, '?')})", price.per_hour, price.currency,
                 price.source)
    return cost


def running_cost(run: Run, zonal: bool, leftovers: list[Leftover]) -> dict:
    """What the environment costs per hour now: GKE's cluster fee, every node (GPU and CPU), the disks
    of its PVCs; per month at this rate (730 h). Parts the catalog cannot price are named."""
    cost = cluster_cost(run, run.conn.kube.nodes(), zonal, wait=60.0)  # a materialization may wait for it
    if isinstance(cost, str):
        return {"cost_unknown": cost}
    for disk in (x for x in leftovers if x.kind == "disk"):
        per_hour, currency = leftover_price(run, disk)
        cost.add(f"disk {disk.name} ({disk.size_gb} GB)", per_hour, currency)
    return {"cost_per_hour": round(cost.per_hour, 4), "cost_per_month": round(cost.per_hour * HOURS_PER_MONTH, 2),
            "cost_currency": cost.currency, "cost_lines": "\n".join(cost.lines), "cost_unknown": ", ".join(cost.unknown)}


class Catalog:
    """Compute Engine's on-demand SKUs per (endpoint, project, region), read off the caller's thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, Any]] = {}  # key -> (read at, skus or the exception)
        self._loading: dict[tuple, threading.Thread] = {}

    def prices(self, google, region: str, wait: float = COLD_WAIT_S) -> list[SkuPrice] | None:
        """The SKUs, or None while a first read is still running; a failed read re-raises its error."""
        key = (repr(getattr(google, "endpoints", None)), google.project, region)
        with self._lock:
            hit = self._entries.get(key)
            fresh = hit is not None and time.monotonic() - hit[0] < PRICE_TTL_S
            thread = self._loading.get(key)
            if not fresh and thread is None:
                thread = self._loading[key] = threading.Thread(target=self._load, args=(key, google, region),
                                                               name=f"gpuplat-catalog-{region}", daemon=True)
                thread.start()
        if not fresh and hit is None and thread is not None:
            thread.join(wait)
            with self._lock:
                hit = self._entries.get(key)
        if hit is None:
            return None
        if isinstance(hit[1], Exception):
            raise hit[1]
        return hit[1]

    def _load(self, key: tuple, google, region: str) -> None:
        try:
            value: Any = google.sku_prices(region)
        except Exception as exc:  # kept, and raised to the asker: it says why no price is known
            value = exc
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._loading.pop(key, None)


CATALOG = Catalog()


def sku_words(description: str) -> frozenset[str]:
    """The words of a SKU description before " running in ...", lower case."""
    head = re.split(r"\s+running\s+in\s+", description.strip(), maxsplit=1, flags=re.I)[0]
    return frozenset(w for w in re.split(r"[\s()/,-]+", head.lower()) if w)


def accelerator_words(accelerator: str) -> frozenset[str]:
    """nvidia-tesla-a100 -> {a100}; nvidia-a100-80gb -> {a100, 80gb}; nvidia-l4 -> {l4}."""
    return frozenset(w for w in accelerator.lower().split("-") if w and w not in _FILLER)


def accelerator_sku_name(accelerator: str) -> str:
    """The catalog's usual name of an accelerator type (for messages): nvidia-l4 -> "Nvidia L4 GPU"."""
    words = accelerator.lower().removeprefix("nvidia-").split("-")
    return "Nvidia " + " ".join(w.capitalize() if w == "tesla" else w.upper() for w in words) + " GPU"


def is_gpu_sku(sku: SkuPrice, accelerator: str) -> bool:
    words = sku_words(sku.description)
    return ("gpu" in words or "gpus" in words) and words - _FILLER == accelerator_words(accelerator)


def is_machine_sku(sku: SkuPrice, family: str, unit: str) -> bool:
    """`<FAMILY> [Predefined] Instance Core|Ram` in any case; not a custom, sole-tenant or spot SKU."""
    words = sku_words(sku.description)
    return words - {"predefined"} == {family.lower(), "instance", unit}


def price_from_catalog(skus: list[SkuPrice], region: str, machine_type: str, accelerator: str, gpus: int,
                       vcpus: float, memory_gib: float) -> NodePrice:
    """GPU SKU x GPUs (none for a CPU node) + the machine family's core SKU x vCPUs + its RAM SKU x GiB
    (on-demand list prices)."""
    family = machine_type.split("-", 1)[0]
    gpus = gpus if accelerator else 0
    gpu = next((s for s in skus if is_gpu_sku(s, accelerator)), None) if gpus else None
    core = next((s for s in skus if is_machine_sku(s, family, "core")), None)
    ram = next((s for s in skus if is_machine_sku(s, family, "ram")), None)
    missing = [what for what, sku, needed in ((f'"{accelerator_sku_name(accelerator)}"', gpu, bool(gpus)),
                                              (f"{family.upper()} instance core", core, True),
                                              (f"{family.upper()} instance RAM", ram, True)) if needed and sku is None]
    if missing or not vcpus or not memory_gib:
        why = f"no Billing Catalog SKU for {', '.join(missing)} in {region}" if missing else \
            "the node does not report its CPU and memory capacity"
        return NodePrice(None, (gpu or core or ram).currency if (gpu or core or ram) else "", f"no price known: {why}")
    total = (gpu.per_hour * gpus if gpu else 0.0) + core.per_hour * vcpus + ram.per_hour * memory_gib
    source = (f"Cloud Billing Catalog, on-demand in {region}: "
              + (f"{gpus} x {gpu.description} ({gpu.per_hour:g}/h) + " if gpu else "")
              + f"{vcpus:g} x {core.description} ({core.per_hour:g}/h) + {memory_gib:g} GiB x {ram.description} "
                f"({ram.per_hour:g}/GiB/h)")
    return NodePrice(round(total, 4), core.currency, source)


def quantity(q: Any) -> float:
    """A Kubernetes quantity ("3920m", "13948519Ki", "1") as a number."""
    if q is None or q == "":
        return 0.0
    s = str(q)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40), ("m", 1e-3), ("k", 1e3),
                           ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)
