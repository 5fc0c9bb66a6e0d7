"""The `scale` subresource and the self-reviews (`auth can-i`, `auth whoami`).

Scale: Deployments, StatefulSets and ReplicaSets answer `{plural}/{name}/scale` with an
`autoscaling/v1` Scale (spec.replicas, status.replicas, status.selector); a PUT or PATCH of it sets
the parent's `spec.replicas` (https://kubernetes.io/docs/reference/kubernetes-api/autoscaling-resources/scale-v1/).
`kubectl scale` GETs the object, then PATCHes `/scale` with a merge patch.

Reviews are answered and never stored (201, the request echoed with a status): the sandbox grants
every authenticated identity everything, as a cluster-admin kubeconfig or a GKE project owner has it
(https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access and
https://kubernetes.io/docs/reference/access-authn-authz/authentication/#self-subject-review).
"""

from __future__ import annotations

import copy
from typing import Callable

from ..core import ApiError
from ..stores.auth import CLUSTER_ADMIN
from ..stores.kube import KubeStore
from ..wire.http import Request
from ..wire.kube import ResourceType, bad_request, json_response
from .kube_writes import finish_update



def _selector_text(selector: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items()))


def scale_of(obj: dict) -> dict:
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": _selector_text((obj.get("spec") or {}).get("selector"))}}


def get_scale(obj: dict):
    return json_response(scale_of(obj))


def set_scale(store: KubeStore, rt: ResourceType, current: dict, scale: dict, dry: bool, manager: str | None):
    if not isinstance(scale, dict) or scale.get("kind", "Scale") != "Scale":
        raise bad_request("the body of a scale subresource write must be an autoscaling/v1 Scale")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise ApiError(422, f'Scale.autoscaling "{current["metadata"]["name"]}" is invalid: spec.replicas: Invalid '
                            f"value: {replicas!r}: must be greater than or equal to 0", reason="Invalid")
    new = copy.deepcopy(current)
    new.setdefault("spec", {})["replicas"] = replicas
    sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
    updated = finish_update(store, rt, current, new, sent_rv if sent_rv != current["metadata"]["resourceVersion"]
                            else None, dry, manager)
    return json_response(scale_of(updated))


def patch_scale(store: KubeStore, rt: ResourceType, current: dict, patch: Callable[[dict], dict], dry: bool,
                manager: str | None):
    return set_scale(store, rt, current, patch(scale_of(current)), dry, manager)


def review(req: Request, rt: ResourceType, body: dict, now: str):
    """The answer to a SelfSubjectAccessReview or SelfSubjectReview (201, nothing stored)."""
    user = req.match.get("user", "")
    answer = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {**body.get("metadata", {}),
                                                                         "creationTimestamp": now}}
    if rt.kind == "SelfSubjectAccessReview":
        answer["spec"] = body.get("spec") or {}
        answer["status"] = {"allowed": True, "reason": "the sandbox grants every authenticated identity everything"}
    else:
        groups = ["system:masters", "system:authenticated"] if user == CLUSTER_ADMIN else ["system:authenticated"]
        answer["status"] = {"userInfo": {"username": user, "groups": groups}}
    return json_response(answer, 201)
