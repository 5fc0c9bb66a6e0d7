"""A no-op rematerialization of every asset and check against Dagster's floor: paired runs, medians.

gpuplat: `dagster asset materialize -m gpuplat_assets.definitions --select '*' --partition sandbox`
on the sandbox environment, materialized once before the timed runs, so each timed run observes,
plans nothing and applies nothing. The floor: the same command on a module of trivial assets and
checks with gpuplat's shape (the same asset names, dependencies, checks, dynamic partitions and
in-process executor) whose bodies return at once. Both run with the same kind of DAGSTER_HOME (SQLite),
one after the other, `--runs` times, alternating which goes first.

Prints per side the median wall time and the median peak RSS of the CLI process (its VmHWM), and the
ratios. Targets (issue 22): wall <= 1.3x the floor, peak RSS <= 2x.

    python benchmarks/noop_materialize.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.profiling import PY_SPY  # noqa: E402
from tests.conftest import SandboxProcess, shipped_environment  # noqa: E402

BIN = Path(sys.executable).parent
WALL_TARGET, RSS_TARGET = 1.3, 2.0


def floor_module(path: Path) -> None:
    """A module of trivial partitioned assets and checks with gpuplat's shape."""
    from substrate.pieces import PIECES

    lines = ["from dagster import AssetCheckResult, Definitions, DynamicPartitionsDefinition, asset, asset_check,"
             " in_process_executor",
             'P = DynamicPartitionsDefinition(name="environments")', "ASSETS, CHECKS = [], []"]
    for piece in PIECES:
        lines.append(textwrap.dedent(f"""
            @asset(name={piece.name!r}, partitions_def=P, deps={list(piece.deps)!r}, group_name={piece.group!r})
            def _{piece.name}(context):
                return None
            ASSETS.append(_{piece.name})"""))
        for check in ("in_sync", *(c.name for c in piece.checks)):
            lines.append(textwrap.dedent(f"""
                @asset_check(asset={piece.name!r}, name={check!r}, partitions_def=P)
                def _{piece.name}_{check}(context):
                    return AssetCheckResult(passed=True)
                CHECKS.append(_{piece.name}_{check})"""))
    lines.append("defs = Definitions(assets=ASSETS, asset_checks=CHECKS, executor=in_process_executor)")
    path.write_text("\n".join(lines) + "\n")


def _hwm_mib(pid: int) -> float | None:
    """The process's own peak RSS so far (VmHWM), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the command's process).

    The peak is the process's VmHWM, read every 20 ms until it exits, not wait4's ru_maxrss: Linux keeps
    ru_maxrss across execve, so a child forked from this benchmark reports at least this process's own
    RSS at the fork (both sides read 269 MiB that way), while VmHWM belongs to the image exec started."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0.0]
    done = threading.Event()

    def sample():
        peak[0] = max(peak[0], _hwm_mib(proc.pid) or 0.0)

    def watch():
        while not done.is_set():
            sample()
            done.wait(0.02)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = proc.stdout.read()  # until the process closes its output, at its exit
    sample()  # once more while it is exiting: a reaped process has no status to read
    proc.wait()
    done.set()
    watcher.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.decode()[-3000:]}")
    return wall, peak[0]


def last_run_events(home: str) -> Counter:
    """The events the latest run under `home` stored, by type: each one is a write to the event log."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        return Counter(str(e.dagster_event.event_type_value if e.dagster_event else "LOG_MESSAGE")
                       for e in instance.all_logs(run.run_id))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--py-spy", metavar="FILE", help="then one more gpuplat run under py-spy (collapsed stacks) into FILE")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gpuplat-noop-"))
    sandbox = SandboxProcess(tmp / "sandbox")
    try:
        sandbox.start()
        envs, work = tmp / "environments", tmp / "work"
        work.mkdir()
        import yaml

        shipped_environment("sandbox", envs)
        floor_module(work / "floor_defs.py")
        base = {k: v for k, v in os.environ.items() if k not in ("GPUPLAT_AUTO_APPROVE", "KUBECONFIG")}
        base.update(GPUPLAT_ENVIRONMENTS=str(envs), GPUPLAT_SANDBOX_DIR=str(sandbox.state_dir),
                    PYTHONPATH=f"{work}:{ROOT}", PYTHONWARNINGS="ignore")
        homes = {}
        for side in ("gpuplat", "floor"):
            home = tmp / f"home-{side}"
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump({
                "storage": {"sqlite": {"base_dir": str(home / "storage")}}, "telemetry": {"enabled": False}}))
            homes[side] = {**base, "DAGSTER_HOME": str(home)}
        from dagster import DagsterInstance
        os.environ["DAGSTER_HOME"] = homes["floor"]["DAGSTER_HOME"]
        with DagsterInstance.get() as instance:  # gpuplat adds its partition on load; the floor's is added here
            instance.add_dynamic_partitions("environments", ["sandbox"])
        cmds = {side: [str(BIN / "dagster"), "asset", "materialize", "-m", module, "--select", "*",
                       "--partition", "sandbox"]
                for side, module in (("gpuplat", "gpuplat_assets.definitions"), ("floor", "floor_defs"))}
        first = timed(cmds["gpuplat"], work, {**homes["gpuplat"], "GPUPLAT_AUTO_APPROVE": "1"})
        print(f"first materialization of the sandbox environment (it builds everything): {first[0]:.1f}s")
        timed(cmds["floor"], work, homes["floor"])  # the floor's first run: .pyc files, the instance's tables
        results: dict[str, list[tuple[float, float]]] = {"gpuplat": [], "floor": []}
        for i in range(args.runs):
            for side in (("gpuplat", "floor") if i % 2 == 0 else ("floor", "gpuplat")):
                results[side].append(timed(cmds[side], work, homes[side]))
        if args.py_spy:
            timed([PY_SPY, "record", "--rate", "250", "--format", "raw", "-o", args.py_spy, "--", *cmds["gpuplat"]],
                  work, homes["gpuplat"])
        events = {side: last_run_events(home["DAGSTER_HOME"]) for side, home in homes.items()}
    finally:
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {side: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for side, r in results.items()}
    for side, r in results.items():
        print(f"{side:<8} wall median {med[side][0]:.2f}s (runs {[round(w, 2) for w, _ in r]}), "
              f"peak RSS median {med[side][1]:.0f} MiB; its last run stored {sum(events[side].values())} events "
              f"({', '.join(f'{k} {v}' for k, v in events[side].most_common(4))}, ...)")
    wall, rss = med["gpuplat"][0] / med["floor"][0], med["gpuplat"][1] / med["floor"][1]
    ok = wall <= WALL_TARGET and rss <= RSS_TARGET
    print(f"{'OK' if ok else 'MISSED'}: no-op rematerialization {wall:.2f}x the floor's wall (target <= {WALL_TARGET}x), "
          f"peak RSS {rss:.2f}x (target <= {RSS_TARGET}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
