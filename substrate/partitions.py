"""Each environment is one partition of every asset: Dagster's dynamic partitions named "environments".

Dynamic, not static: static partitions are fixed when the code location loads, so a new folder needed
a reload (while the CLI already saw it), and one folder with an invalid name made the whole location
fail to load. Dynamic partitions live in the Dagster instance, which the webserver reads live: they
are kept in step with the environments folder by

- the `environments_sensor` (every 30 s): adds every new folder with a valid name, reports the rest;
- the code location's load in a command-line process (`dagster asset materialize --partition <new>`),
  before the CLI checks the partition: the quick start on a fresh instance needs no sensor.

A folder that is removed keeps its partition: its history stays, the sensors say the folder is gone.
"""

from __future__ import annotations

import logging
import os

from dagster import DagsterInstance, DynamicPartitionsDefinition

from .environments import Environments, load_environments

NAME = "environments"
ENVIRONMENTS = DynamicPartitionsDefinition(name=NAME)

_log = logging.getLogger("gpuplat.partitions")


def known(instance: DagsterInstance) -> set[str]:
    return set(instance.get_dynamic_partitions(NAME))


def missing(instance: DagsterInstance, found: Environments) -> list[str]:
    """Environments of the folder that are not partitions yet (a broken config included: its partition
    is where its error is shown)."""
    have = known(instance)
    return [n for n in found.names if n not in have]


def sync(instance: DagsterInstance, found: Environments | None = None) -> list[str]:
    """Add what the folder has and the instance lacks; returns what was added. Never deletes."""
    new = missing(instance, found or load_environments())
    if new:
        instance.add_dynamic_partitions(NAME, new)
    return new


def sync_on_load() -> None:
    """At the code location's load in a process that has an instance (DAGSTER_HOME): best effort, never
    failing the load. What it cannot do now, the environments sensor does within a tick."""
    if not os.environ.get("DAGSTER_HOME"):
        return
    try:
        with DagsterInstance.get() as instance:
            added = sync(instance)
        if added:
            _log.info(f"gpuplat: new environment partition(s): {', '.join(added)}")
    except Exception as exc:  # noqa: BLE001 - loading the code location must never fail because of this
        _log.warning(f"gpuplat: could not add environment partitions at load ({type(exc).__name__}: {exc}); "
                     f"the environments sensor adds them within a tick")
