"""What the Dagster instance remembers of each environment: what was materialized, and what with.

Each materialization records the fingerprint of the desired state it applied (`desired_fingerprint`):
the drift sensor tells a config that moved (a change someone is making) from live state that moved
(drift) by comparing it with the desired state of now. A fleet's tick asks the instance one question
per asset (the latest materialization of every partition) and reads only the records it has not read
before: a record never changes, so its few fields are kept by storage id for the process's life.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass

from dagster import AssetKey, AssetObservation, AssetRecordsFilter, DagsterEventType, DagsterInstance, MetadataValue

from resources.models import KubeIdentity

DESIRED_KEY = "desired_fingerprint"
IDENTITY_KEY = "kube_identity"
CLUSTER = "cluster"


@dataclass(frozen=True)
class Applied:
    """What one materialization of one environment left: the desired state it applied, the kube target."""

    storage_id: int
    desired: str = ""  # "" for a materialization older than desired fingerprints, or a resting piece
    identity: KubeIdentity | None = None


# Storage ids are unique within one instance's event log only: the records read are kept per event log.
_SEEN: "weakref.WeakKeyDictionary[object, dict[int, Applied]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_SEEN_MAX = 200_000


def _value(meta: dict, key: str):
    value = meta.get(key)
    return getattr(value, "data", None) or getattr(value, "value", None) or getattr(value, "text", None)


def _applied(storage_id: int, meta: dict) -> Applied:
    desired = _value(meta, DESIRED_KEY)
    ident = _value(meta, IDENTITY_KEY)
    identity = (KubeIdentity(ident["server"], ident["kube_system_uid"])
                if isinstance(ident, dict) and ident.get("server") and ident.get("kube_system_uid") else None)
    return Applied(storage_id, desired if isinstance(desired, str) else "", identity)


def latest(instance: DagsterInstance, asset: str, partitions: set[str] | None = None) -> dict[str, Applied]:
    """The latest materialization of `asset` per environment (only `partitions` when given)."""
    key = AssetKey(asset)
    ids = instance.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION, partitions)
    with _LOCK:
        seen = _SEEN.setdefault(instance.event_log_storage, {})
        unread = [i for i in ids.values() if i not in seen]
    if unread:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, storage_ids=unread),
                                                  limit=len(unread)).records
        with _LOCK:
            if len(seen) > _SEEN_MAX:
                seen.clear()
            for record in records:
                seen[record.storage_id] = _applied(record.storage_id, record.asset_materialization.metadata)
    with _LOCK:
        return {p: seen.get(i, Applied(i)) for p, i in ids.items()}


def recorded_identity(instance: DagsterInstance, env_name: str) -> KubeIdentity | None:
    """The kube target recorded by the latest materialization of `cluster` for this environment."""
    return latest(instance, CLUSTER, {env_name}).get(env_name, Applied(0)).identity


def _record_key(asset: str, env: str, key: str) -> str:
    return f"gpuplat/record/{asset}/{env}/{key}"


def recall(instance: DagsterInstance, asset: str, env: str, key: str):
    """The value last remembered under `key` for `asset` in `env` (None when never)."""
    name = _record_key(asset, env, key)
    return _loaded(instance.run_storage.get_cursor_values({name}).get(name))


def _loaded(raw: str | None):
    return json.loads(raw) if raw else None


class Recollections:
    """`recall` for every environment of one tick: the first ask of an (asset, key) reads it for all of them
    in one query, instead of one query per environment (a fleet's tick asks each environment's pause record)."""

    def __init__(self, instance: DagsterInstance, envs: list[str]):
        self._instance, self._envs = instance, frozenset(envs)
        self._lock = threading.Lock()
        self._read: dict[tuple[str, str], dict[str, str]] = {}

    def recall(self, asset: str, env: str, key: str):
        if env not in self._envs:
            return recall(self._instance, asset, env, key)
        with self._lock:  # one query per (asset, key), however many threads ask at once
            values = self._read.get((asset, key))
            if values is None:
                names = {_record_key(asset, e, key) for e in self._envs}
                values = self._read[(asset, key)] = self._instance.run_storage.get_cursor_values(names)
        return _loaded(values.get(_record_key(asset, env, key)))


def remember(context, asset: str, env: str, key: str, value, description: str) -> None:
    """Record `value` under `key` for `asset` in `env`, from inside a run: in the instance's key-value store
    (found by key, however many observations came after), and as an observation the UI shows."""
    context.instance.run_storage.set_cursor_values({_record_key(asset, env, key): json.dumps(value, sort_keys=True)})
    context.log_event(AssetObservation(asset_key=AssetKey(asset), partition=env, description=description,
                                       metadata={key: MetadataValue.json(value)}))
