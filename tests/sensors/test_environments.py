"""Environments are found at run time: the environments sensor keeps the partitions in step with the
folder, a broken environment shows on its own partition once per distinct error, and nothing one folder
does can take the code location or another environment down. The schedule checks what was built."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
from dagster import build_schedule_context

from sensors.environments import environments_sensor
from sensors.schedules import drift_checks_schedule
from substrate.partitions import NAME, known

from .conftest import Ticker, latest_check, runs, skip_text

BROKEN = "cluster: {name: ai-dev, projectID: gpuplat-test}\nsubstrate: {kind: gke, sandbox: true}\nprofile: staging\n"


def test_a_new_folder_becomes_a_partition_within_one_tick_without_a_reload(gp):
    ticker = Ticker(environments_sensor, gp, daemon=True)
    ticker.tick()
    assert known(gp.instance) == {"sandbox"}
    gp.platform.write("lab-7", {"cluster": {"name": "lab-7", "projectID": "gpuplat-test"},
                                "substrate": {"kind": "gke", "sandbox": True, "external_secrets": []}})
    result = ticker.tick()
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["lab-7"]]
    assert known(gp.instance) == {"sandbox", "lab-7"}
    # The same code location, never reloaded, materializes it (the asset's partitions are the instance's).
    assert gp.materialize(select=["apis_enabled"], env="lab-7").success
    again = ticker.tick()
    assert not again.dynamic_partitions_requests and "2 environment(s)" in skip_text(again)


def test_a_removed_folder_keeps_its_partition_and_its_history(gp):
    assert gp.materialize(select=["apis_enabled"]).success
    ticker = Ticker(environments_sensor, gp, daemon=True)
    ticker.tick()
    path = gp.platform.path("sandbox")
    path.unlink()
    path.parent.rmdir()
    text = skip_text(ticker.tick())
    assert "folder gone (history kept): sandbox" in text
    assert gp.instance.has_dynamic_partition(NAME, "sandbox")
    assert "sandbox" in gp.instance.get_materialized_partitions(__import__("dagster").AssetKey("apis_enabled"))


def test_a_broken_config_fails_its_in_sync_checks_once_per_distinct_error_and_clears_when_fixed(gp):
    gp.platform.write("broken", BROKEN)
    ticker = Ticker(environments_sensor, gp, daemon=True)
    first = ticker.tick()
    [report] = runs(first)
    assert report.partition_key == "broken" and report.asset_selection is None
    assert {k.name for k in report.asset_check_keys} == {"in_sync"} and len(report.asset_check_keys) == 12
    [(_, launched)] = ticker.launched
    assert launched.success  # a report, not a red run
    check = latest_check(gp, "cluster", "in_sync", "broken")
    assert not check.passed and "profile: 'staging' is not allowed" in check.description
    assert not runs(ticker.tick())  # the same error: nothing more
    gp.platform.write("broken", BROKEN.replace("staging", "cost; secret_backend: gcpms").replace("; ", "\n"))
    [second] = runs(ticker.tick())  # another error: shown again
    assert second.run_key != report.run_key
    assert "secret_backend: 'gcpms'" in latest_check(gp, "cluster", "in_sync", "broken").description
    gp.platform.write("broken", BROKEN.replace("profile: staging\n", ""))
    [cleared] = runs(ticker.tick())
    assert "fixed" in cleared.run_key
    assert latest_check(gp, "cluster", "in_sync", "broken").passed is False  # never materialized: not in sync...
    assert "profile" not in latest_check(gp, "cluster", "in_sync", "broken").description  # ...but no config error


def test_a_folder_that_cannot_be_an_environment_affects_only_itself(gp, tmp_path):
    """`prod...old` (Dagster refuses "..." in a partition key) and a symlink loop beside valid environments:
    the code location loads, the valid one materializes, each bad folder has its own true line."""
    gp.configure()
    odd = gp.platform.envs / "prod...old"
    odd.mkdir()
    (odd / "config.yaml").write_text(gp.platform.path("sandbox").read_text())
    loop = gp.platform.envs / "loop"
    os.symlink(loop, loop)
    from gpuplat_assets.definitions import defs  # the code location loads
    assert len(defs.get_repository_def().asset_graph.get_all_asset_keys()) == 12
    ticker = Ticker(environments_sensor, gp, daemon=True)
    ticker.tick()
    assert known(gp.instance) == {"sandbox", "loop"}  # a loop is a valid name: its error shows on its partition
    text = skip_text(ticker.tick())
    assert "ignored: " in text and "prod...old" in text and "cannot name an environment" in text, text
    assert "loop: is a symbolic link loop" in text, text
    assert "symbolic link loop" in latest_check(gp, "cluster", "in_sync", "loop").description
    assert gp.materialize(select=["apis_enabled"]).success


def test_a_yaml_alias_bomb_and_a_huge_file_cost_only_their_own_environment(gp):
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    gp.platform.write("bomb", "\n".join(levels) + "\ncluster: {name: x, projectID: p}\n")
    gp.platform.write("huge", "cluster: {name: x, projectID: p}\n" + "# padding\n" * 200_000)
    gp.configure()
    import time

    from substrate.environments import load_environments
    started = time.monotonic()
    found = load_environments(gp.platform.envs)
    assert time.monotonic() - started < 2
    assert "too large once its YAML aliases" in found.errors["bomb"]
    assert "at most 1024 KiB" in found.errors["huge"]
    assert "sandbox" in found.configs


@pytest.mark.persistent_instance
def test_the_schedule_checks_built_environments_and_names_the_skipped_ones(gp):
    from sensors.schedules import plan_checks

    assert gp.materialize(select=["apis_enabled"]).success
    gp.write("never-built", {"cluster": {"name": "nb", "projectID": "gpuplat-test"},
                             "substrate": {"kind": "gke", "sandbox": True}})
    gp.platform.write("not-yet", {"cluster": {"name": "ny", "projectID": "gpuplat-test"},
                                  "substrate": {"kind": "gke", "sandbox": True}})
    when = datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc)
    with build_schedule_context(instance=gp.instance, scheduled_execution_time=when) as context:
        requests = drift_checks_schedule(context)
    assert [r.partition_key for r in requests] == ["sandbox"]
    assert requests[0].run_key == "drift_checks:sandbox:2026-01-01T12:30"
    assert plan_checks(gp.instance) == (["sandbox"], {"never-built": "never materialized",
                                                      "not-yet": "not a partition yet"})
