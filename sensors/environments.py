"""The environments sensor: the partitions follow the environments folder, and a broken one is seen.

Every 30 s it lists `environments/` (GPUPLAT_ENVIRONMENTS):

- a new folder with a valid name becomes a partition (a dynamic partition: no reload; see
  substrate/partitions.py), and a config error there is shown where people look: one checks-only run
  of that environment, whose `in_sync` checks fail with the error (file, key, value, what is allowed),
  once per distinct error, and one more when the error is fixed, which turns them green again;
- a folder whose name cannot be an environment (`prod...old`), a symlink loop, a folder that is gone:
  named in the tick's message, never failing anything else.
"""

from __future__ import annotations

import hashlib
import json
import time

from dagster import (
    AssetCheckKey,
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from substrate.environments import environments_dir, load_environments
from substrate.jobs import substrate_job
from substrate.partitions import ENVIRONMENTS, known
from substrate.pieces import PIECES

from .tick import report_run

INTERVAL_S = 30
TRIGGER = "environments-sensor"


def in_sync_keys() -> list[AssetCheckKey]:
    return [AssetCheckKey(AssetKey(p.name), "in_sync") for p in PIECES]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_run(env: str, run_key: str, why: str) -> RunRequest:
    """A checks-only run of every `in_sync` check of `env`: where a config error shows on the partition."""
    return report_run(env, in_sync_keys(), run_key, TRIGGER, why)


@sensor(name="environments_sensor", jobs=[substrate_job], minimum_interval_seconds=INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description="Keeps the environment partitions in step with the environments folder (no reload); a config "
                    "that does not load fails its environment's in_sync checks, once per distinct error.")
def environments_sensor(context: SensorEvaluationContext):
    root = environments_dir()
    found = load_environments(root)
    have = known(context.instance)
    new = [n for n in found.names if n not in have]
    try:
        reported: dict[str, str] = dict(json.loads(context.cursor or "{}").get("errors") or {})
    except ValueError:
        reported = {}
    runs = []
    stamp = int(time.time())
    for name, error in sorted(found.errors.items()):
        h = _hash(error)
        if reported.get(name) != h:
            reported[name] = h
            runs.append(check_run(name, f"{name}:config-error:{h}", f"config error: {error}"))
    for name in [n for n in reported if n not in found.errors]:
        del reported[name]
        if name in found.configs:  # fixed: the same checks, green again
            runs.append(check_run(name, f"{name}:config-fixed:{stamp}", "config loads again"))
    notes = []
    if new:
        notes.append(f"new partition(s): {', '.join(new)}")
    notes += [f"config error: {e}" for e in found.errors.values()]
    notes += [f"ignored: {why}" for why in found.invalid.values()]
    gone = sorted(have - set(found.names))
    if gone:
        notes.append(f"folder gone (history kept): {', '.join(gone)}")
    summary = f"{len(found.configs)} environment(s) under {root}" + ("; " + "; ".join(notes) if notes else "")
    for line in notes:
        context.log.info(line)
    requests = [ENVIRONMENTS.build_add_request(new)] if new else []
    cursor = json.dumps({"errors": reported}, sort_keys=True)
    if runs or requests:
        return SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)
    return SensorResult(skip_reason=summary[:2000], cursor=cursor)
