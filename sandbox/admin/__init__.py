"""The admin API: the hand of tests and demos on the fake cloud (never counted as client calls).

`GET /sandbox/calls` returns the call counters; the other verbs inject faults, advance the
simulated clock, write kubeconfigs, inject drift and add workloads. Each simulation module adds
its own verbs (`ADMIN_ROUTES`) beside these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import ApiError
from ..gc_clock import process_clock
from ..sims import controllers
from ..sims.util import resolve_cluster
from ..stores import auth
from ..wire.http import Request, Response, Route
from . import gke, google, kube

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox


def calls(sb: "Sandbox", req: Request):
    return sb.counters.snapshot()


def reset_calls(sb: "Sandbox", req: Request):
    sb.counters.reset()
    return {}


def add_fault(sb: "Sandbox", req: Request):
    body = req.json()
    missing = [k for k in ("api", "method", "kind") if k not in body]
    if missing:
        raise ApiError(400, f"fault needs {', '.join(missing)}")
    rule = sb.faults.add(body["api"], body["method"], str(body["kind"]), int(body.get("count", 1)),
                         float(body.get("seconds") or 0))
    return vars(rule).copy()


def list_faults(sb: "Sandbox", req: Request):
    return {"faults": sb.faults.to_json()}


def clear_faults(sb: "Sandbox", req: Request):
    sb.faults.rules = []
    return {}


def advance(sb: "Sandbox", req: Request):
    seconds = req.json().get("seconds")
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise ApiError(400, "clock/advance needs a non-negative number `seconds`")
    return {"now": sb.advance_clock(seconds), "offset": sb.clock.offset}


def clock(sb: "Sandbox", req: Request):
    return {"now": sb.clock.now(), "offset": sb.clock.offset}


def kubeconfig(sb: "Sandbox", req: Request):
    """A cluster's administrator kubeconfig: its endpoint, its CA, its static admin token (what a
    bring-your-own cluster's owner hands over; for GKE clusters `gcloud container clusters
    get-credentials` writes the Google-token one)."""
    cid = resolve_cluster(sb, req.param("cluster"))
    user = f"{cid}-admin"
    text = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {cid}\n  cluster:\n    server: {sb.kube_server_url(cid)}\n"
        f"    certificate-authority-data: {sb.kube_ca(cid)}\n"
        f"users:\n- name: {user}\n  user:\n    token: {auth.cluster_token(sb, cid)}\n"
        f"contexts:\n- name: {cid}\n  context:\n    cluster: {cid}\n    user: {user}\n"
        f"current-context: {cid}\n"
    )
    return Response(200, text, "application/yaml")


def clusters(sb: "Sandbox", req: Request):
    return {"clusters": [{"id": cid, "server": sb.kube_server_url(cid)} for cid in sb.kube_cluster_ids()]}


def reconcile(sb: "Sandbox", req: Request):
    sb.reconcile()
    return {"now": sb.clock.now()}


def process(sb: "Sandbox", req: Request):
    """This process's garbage collector: seconds spent and collections per generation since it started
    serving, objects it tracks and objects frozen out of its reach (benchmarks/drift_tick.py)."""
    return process_clock().snapshot()


def shutdown(sb: "Sandbox", req: Request):
    sb.stopped.set()
    return {}


ROUTES = [
    Route("GET", r"/sandbox/calls", calls, "calls"),
    Route("POST", r"/sandbox/calls/reset", reset_calls, "calls.reset"),
    Route("GET", r"/sandbox/faults", list_faults, "faults.list"),
    Route("POST", r"/sandbox/faults", add_fault, "faults.add"),
    Route("DELETE", r"/sandbox/faults", clear_faults, "faults.clear"),
    Route("GET", r"/sandbox/clock", clock, "clock"),
    Route("POST", r"/sandbox/clock/advance", advance, "clock.advance"),
    Route("GET", r"/sandbox/kubeconfig", kubeconfig, "kubeconfig"),
    Route("GET", r"/sandbox/clusters", clusters, "clusters"),
    Route("POST", r"/sandbox/reconcile", reconcile, "reconcile"),
    Route("POST", r"/sandbox/shutdown", shutdown, "shutdown"),
    Route("GET", r"/sandbox/process", process, "process"),
    *gke.ADMIN_ROUTES,
    *google.ADMIN_ROUTES,
    *kube.ADMIN_ROUTES,
    *controllers.ADMIN_ROUTES,
]
