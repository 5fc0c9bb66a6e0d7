"""What runs remembered, read back for a fleet's tick: one query per (asset, key), never one per environment."""

from __future__ import annotations

import json

from dagster import DagsterInstance

from substrate import history
from substrate.pause import RECORD


def test_a_tick_reads_every_environment_s_record_in_one_query_and_each_gets_its_own():
    instance = DagsterInstance.ephemeral()
    envs = [f"env-{i:03d}" for i in range(300)]
    instance.run_storage.set_cursor_values({
        f"gpuplat/record/cluster/{e}/{RECORD}": json.dumps({"scaled": [i]}) for i, e in enumerate(envs) if i % 3 == 0})
    queries = []
    read = instance.run_storage.get_cursor_values
    instance.run_storage.get_cursor_values = lambda keys: queries.append(len(keys)) or read(keys)

    memory = history.Recollections(instance, envs)
    got = {e: memory.recall(history.CLUSTER, e, RECORD) for e in envs}

    assert got == {e: ({"scaled": [i]} if i % 3 == 0 else None) for i, e in enumerate(envs)}
    assert queries == [300]  # one read for the whole fleet
    assert memory.recall(history.CLUSTER, "env-000", "other") is None and queries == [300, 300]
    # an environment outside the tick's list is read alone, as a run reads it
    assert memory.recall(history.CLUSTER, "elsewhere", RECORD) is None and queries[-1] == 1
    assert history.recall(instance, history.CLUSTER, "env-003", RECORD) == {"scaled": [3]}
