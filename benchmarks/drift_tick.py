"""One drift-sensor tick for 1, 10 and 50 (or 500) environments on the sandbox: seconds per tick, calls per env.

Writes N environment configs (each its own GKE cluster in one sandbox project) to a temporary
folder, starts `python -m sandbox serve` as its own process (the sandbox does not share this
process's GIL, as in a deployment), materializes the first `--materialize` environments (in parallel
worker processes, then recorded in this process's instance) and copies the last one's sandbox state
for the others (benchmarks/fleet_clone.py), so the ticks observe real clusters, node pools,
StorageClasses, Argo CD objects and secrets; the first tick must find every environment in sync.
Then it times ticks of the real sensor.

Reports per N: the median of 3 ticks (after WARM_TICKS warm-up ticks), API calls per environment per tick
(from `GET <admin>/sandbox/calls`), and the sandbox's own CPU time per tick. Then profiles one tick
at the largest N with cProfile, run with one worker so the work is on the profiled thread, and
prints what dominates.

Targets (issue 22): 50 environments tick in < 2 s and 500 in < 10 s; calls per environment do not
grow with N; gpuplat's own CPU at most 10 ms per environment per tick.

    python benchmarks/drift_tick.py [--sizes 1,10,50] [--workers 8] [--materialize 10]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fleet_clone import clone_clusters  # noqa: E402
from benchmarks.profiling import PY_SPY  # noqa: E402
from tests.platform_tree import example_platform  # noqa: E402

PROJECT = "bench"
LOCATION = "us-central1-a"
TARGETS_S = {50: 2.0, 500: 10.0}  # s/tick per fleet size; a size between gets the next larger one
OWN_CPU_TARGET_MS = 10.0
# Warm-up ticks before the timed ones: the first builds clients and discovery caches; the sensor halves or
# doubles its threads after each tick (sensors/tick.py Pace), from 8 to 1 in three.
WARM_TICKS = 4


def env_config(i: int) -> dict:
    return {"cluster": {"name": f"c-{i:03d}", "projectID": PROJECT, "location": LOCATION},
            "repoURL": "https://github.com/example/gpu-inference-platform", "profile": "dev", "gpu_stack": "gke-managed",
            "substrate": {"kind": "gke", "sandbox": True, "external_secrets": []}}


def admin(urls: dict, method: str, path: str, body=None):
    req = urllib.request.Request(urls["admin"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- worker: materialize some environments ----------------------------------------------------------
def worker(names: list[str], kube_dir: str, state_dir: str) -> int:
    from dagster import DagsterInstance, materialize

    from gpuplat_assets.assets import ASSETS, CHECKS
    from resources import GpuplatResource
    from substrate import partitions

    resource = GpuplatResource(kube_dir=kube_dir, sandbox_state_dir=state_dir)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions.NAME, names)  # what the environments sensor does
    for name in names:
        result = materialize([*ASSETS, *CHECKS], partition_key=name, instance=instance,
                             resources={"gpuplat": resource}, raise_on_error=False)
        if not result.success:
            print(f"materializing {name} failed", file=sys.stderr)
            return 1
    return 0


# ---- the benchmark -----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--workers", type=int, default=8, help="the sensor's threads")
    parser.add_argument("--materializers", type=int, default=8, help="processes materializing environments")
    parser.add_argument("--materialize", type=int, default=10, metavar="N",
                        help="materialize this many environments; the rest are copies of the last one's state")
    parser.add_argument("--soak", type=int, default=0, metavar="TICKS",
                        help="then this many ticks at the largest size in this process: its RSS, first and last")
    parser.add_argument("--py-spy", metavar="FILE", help="record the last size's timed ticks (and the soak) with "
                        "py-spy, collapsed stacks (--format raw), into FILE (this process) and FILE.sandbox (the sandbox)")
    parser.add_argument("--profile-out", metavar="FILE", help="also write the profiled tick's cProfile stats to FILE "
                        "(pstats format: sort by cumulative time to see what a piece costs)")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--kube-dir", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.kube_dir, args.state_dir)

    sizes = [int(s) for s in args.sizes.split(",")]
    n_max = max(sizes)
    tmp = Path(tempfile.mkdtemp(prefix="gpuplat-drift-bench-"))
    envs = tmp / "environments"
    names = [f"env-{i:03d}" for i in range(n_max)]
    for i, name in enumerate(names):
        (envs / name).mkdir(parents=True)
        (envs / name / "config.yaml").write_text(json.dumps(env_config(i)))
    example_platform(tmp, names, PROJECT)  # the checkout holding environments/ is each environment's platform fork
    os.environ["GPUPLAT_ENVIRONMENTS"] = str(envs)  # the partitions, read when gpuplat_assets is imported
    os.environ.pop("GPUPLAT_AUTO_APPROVE", None)
    state_dir, kube_dir = tmp / "sandbox", tmp / "kube"
    state_dir.mkdir()
    sandbox, urls = start_sandbox(state_dir)
    try:
        for metric, limit in (("CPUS", 100000), ("NVIDIA_L4_GPUS", 10000), ("IN_USE_ADDRESSES", 10000)):
            admin(urls, "PUT", "/sandbox/quotas", {"project": PROJECT, "region": "us-central1", "metric": metric,
                                                   "limit": limit})
        for metric in ("GPUS_ALL_REGIONS", "CPUS_ALL_REGIONS"):
            admin(urls, "PUT", "/sandbox/quotas", {"project": PROJECT, "metric": metric, "limit": 100000})
        started = time.monotonic()
        real = names[:max(1, min(args.materialize, n_max))]
        if not materialize_all(real, args.materializers, tmp, kube_dir, state_dir):
            return 1
        print(f"materialized {len(real)} environments in {time.monotonic() - started:.0f}s "
              f"({args.materializers} processes)")
        if len(real) < n_max:  # the rest: copies of the last one's state (benchmarks/fleet_clone.py)
            started = time.monotonic()
            stop_sandbox(sandbox)
            clone_clusters(state_dir, PROJECT, LOCATION, (env_config(len(real) - 1)["cluster"]["name"], real[-1]),
                           [(env_config(i)["cluster"]["name"], names[i]) for i in range(len(real), n_max)])
            sandbox, urls = start_sandbox(state_dir)
            print(f"copied it as {n_max - len(real)} more in {time.monotonic() - started:.0f}s")
        rc = run(args, sizes, names, tmp, envs, state_dir, kube_dir, urls, sandbox.pid)
        stop_sandbox(sandbox)
        sandbox_controllers(state_dir, tmp / "sandbox-copy", len(names))
        return rc
    finally:
        stop_sandbox(sandbox)
        shutil.rmtree(tmp, ignore_errors=True)


def start_sandbox(state_dir: Path) -> tuple[subprocess.Popen, dict]:
    port_file = state_dir / "ports.json"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--ephemeral-ports", "--state-dir",
                             str(state_dir), "--port-file", str(port_file)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # 500 clusters: 500 TLS endpoints to open
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())


def stop_sandbox(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # it writes its state on the way out
        proc.wait(60)


def materialize_all(names: list[str], processes: int, tmp: Path, kube_dir: Path, state_dir: Path) -> bool:
    """Materialize every environment: the first alone (it enables the project's APIs and seeds its
    secrets, which every environment of the one sandbox project shares), the others in parallel."""

    def materialize(groups: list[list[str]]) -> bool:
        procs = []
        for g in (g for g in groups if g):
            log = tmp / f"materialize-{g[0]}.log"
            with open(log, "w") as out:
                procs.append((subprocess.Popen([sys.executable, __file__, "--kube-dir", str(kube_dir), "--state-dir",
                                                str(state_dir), "--worker", *g], cwd=ROOT, stdout=out,
                                               stderr=subprocess.STDOUT), log))
        failed = [log for p, log in procs if p.wait()]
        for log in failed:
            print(f"{log}:\n" + log.read_text()[-3000:], file=sys.stderr)
        return not failed

    rest = names[1:]
    if materialize([names[:1]]) and materialize([rest[i::processes] for i in range(processes)]):
        return True
    print("materialization failed", file=sys.stderr)
    return False


def sandbox_controllers(state_dir: Path, copy: Path, n: int, passes: int = 20) -> None:
    """Time one pass of every simulated controller over every cluster (what a request would cost if it
    ran the simulations of every cluster rather than of those it touches: sandbox/app.py reconcile)."""
    from sandbox.app import EPHEMERAL_PORTS, Sandbox

    shutil.copytree(state_dir, copy)
    sb = Sandbox(copy, ports=EPHEMERAL_PORTS)
    try:
        timings = {c.__name__: 0.0 for c in sb.controllers}
        for _ in range(passes):
            for c in sb.controllers:
                t0 = time.perf_counter()
                with sb.store.lock:
                    c(sb)
                timings[c.__name__] += time.perf_counter() - t0
        total = sum(timings.values()) / passes
        print(f"\none pass of the sandbox's simulations over all {n} clusters: {total * 1000:.1f} ms; a request "
              f"runs it for the clusters it touches only ({total * 1000 / n:.2f} ms per cluster), when their state "
              f"changed or a simulated second passed")
        for name, secs in sorted(timings.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {name:<32} {secs / passes * 1000:7.2f} ms")
    finally:
        for srv in (*sb.servers.values(), *sb.kube_servers.values()):  # bound, never started: close them
            srv.stop()


def start_spies(py_spy: str, pids: tuple[int, int]) -> list[subprocess.Popen]:
    """py-spy on this process and the sandbox, sampling the thread that holds the GIL only: where each
    process spends its CPU."""
    spies = []
    for pid, out in zip(pids, (py_spy, f"{py_spy}.sandbox")):
        spies.append(subprocess.Popen([PY_SPY, "record", "--pid", str(pid), "--rate", "200", "--gil", "--format",
                                       "raw", "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    time.sleep(2)  # py-spy attaches
    for spy in spies:
        if spy.poll() is not None:  # not installed, or not allowed to attach (ptrace)
            raise SystemExit(f"py-spy did not start: {spy.stderr.read().strip()[-500:]}")
    return spies


def tracked_objects() -> str:
    """How many objects the collector scans in a full collection, and the most common kinds of them."""
    import gc
    from collections import Counter
    objs = gc.get_objects()
    kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objs).most_common(6)
    frozen = gc.get_freeze_count()
    return (f"{len(objs):,} objects tracked{f' (and {frozen:,} frozen)' if frozen else ''}, most: "
            + ", ".join(f"{k} {v:,}" for k, v in kinds))


def run(args, sizes, names, tmp, envs, state_dir, kube_dir, urls, sandbox_pid) -> int:
    from dagster import AssetMaterialization, DagsterInstance, build_sensor_context

    from substrate.pieces import PIECES
    from resources import GpuplatResource
    from sensors.drift import build_drift_sensor

    from substrate import partitions

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions.NAME, names)
    for name in names:  # what the workers did, recorded where the sensor looks
        for piece in PIECES:
            instance.report_runless_asset_event(AssetMaterialization(piece.name, partition=name))
    resource = GpuplatResource(kube_dir=str(kube_dir), sandbox_state_dir=str(state_dir))

    def sensor_for(n: int, workers: int):
        root = tmp / f"roots-{n}-{workers}"
        root.mkdir(exist_ok=True)
        for name in names[:n]:
            if not (root / name).exists():
                (root / name).symlink_to(envs / name)
        os.environ["GPUPLAT_ENVIRONMENTS"] = str(root)  # what the sensor reads at each tick
        return build_drift_sensor(name=f"drift_{n}_{workers}", workers=workers)

    def tick(sensor_def, cursor):
        ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"gpuplat": resource})
        return sensor_def(ctx)

    from sandbox.gc_clock import GcClock

    rows, spies, gc_clock = [], [], GcClock()
    for n in sizes:
        sensor_def = sensor_for(n, args.workers)
        result = tick(sensor_def, None)  # warm-up: clients, discovery caches
        assert not result.run_requests, [r.run_key for r in result.run_requests]
        for _ in range(WARM_TICKS - 1):  # the sensor settles how many threads it observes with (tick.py Pace)
            result = tick(sensor_def, result.cursor)
        if args.py_spy and n == sizes[-1]:  # the last size's timed ticks, not its warm-up's imports
            spies = start_spies(args.py_spy, (os.getpid(), sandbox_pid))
        cursor = result.cursor
        times, calls, cpu, own, gc_s, sandbox_gc = [], [], [], [], [], []
        methods: dict = {}
        for _ in range(3):
            admin(urls, "POST", "/sandbox/calls/reset")
            sg0 = admin(urls, "GET", "/sandbox/process")  # outside the CPU measured: it counts the sandbox's objects
            c0 = cpu_seconds(sandbox_pid)
            p0 = time.process_time()  # this process: the sensor and its threads, gpuplat's own CPU
            g0, full0 = gc_clock.seconds, gc_clock.collections[2]
            t0 = time.perf_counter()
            result = tick(sensor_def, cursor)
            times.append(time.perf_counter() - t0)
            gc_s.append((gc_clock.seconds - g0, gc_clock.collections[2] - full0))
            own.append(time.process_time() - p0)
            cpu.append(cpu_seconds(sandbox_pid) - c0)
            sg1 = admin(urls, "GET", "/sandbox/process")
            sandbox_gc.append((sg1["gc_seconds"] - sg0["gc_seconds"], sg1["collections"][2] - sg0["collections"][2]))
            snap = admin(urls, "GET", "/sandbox/calls")
            calls.append(snap["_total"]["read"] + snap["_total"]["mutate"])
            assert snap["_total"]["mutate"] == 0
            methods = {f"{api}.{m}": c for api, v in snap.items() if api != "_total" for m, c in v["methods"].items()}
            cursor = result.cursor
        skip = result.skip_reason.skip_message if result.skip_reason else ""
        rows.append((n, statistics.median(times), statistics.median(calls) / n, statistics.median(cpu), methods, skip,
                     statistics.median(own) * 1000 / n))
        print(f"{n} environments: this process's garbage collector ran {statistics.median(g for g, _ in gc_s):.2f} s "
              f"per tick, {statistics.median(f for _, f in gc_s):.0f} full collection(s) (medians of 3); "
              f"{tracked_objects()}\n{n} environments: the sandbox's garbage collector ran "
              f"{statistics.median(g for g, _ in sandbox_gc):.2f} s per tick, "
              f"{statistics.median(f for _, f in sandbox_gc):.0f} full collection(s); {sg1['tracked']:,} objects tracked"
              + (f", {sg1['frozen']:,} frozen" if sg1["frozen"] else ""))

    if args.soak:  # at the largest size, whatever the order given
        soak(args.soak, sensor_for(len(names), args.workers), tick, len(names))
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        try:
            spy.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            spy.kill()
            print("py-spy did not finish writing its profile within 120 s", file=sys.stderr)
    if spies:
        print(f"py-spy: the timed ticks{' and the soak' if args.soak else ''} in {args.py_spy} (this process) and "
              f"{args.py_spy}.sandbox (the sandbox), collapsed stacks")

    print(f"\n{'envs':>5} {'s/tick (median of 3)':>21} {'calls/env/tick':>15} {'sandbox CPU s/tick':>19} "
          f"{'gpuplat CPU ms/env/tick':>24}")
    for n, t, c, cpu, _, _, ms in rows:
        print(f"{n:>5} {t:>21.2f} {c:>15.1f} {cpu:>19.2f} {ms:>24.1f}")
    n, t, c, _, methods, skip, _ = rows[-1]
    print(f"\ncalls in one tick at {n} environments (per environment): "
          + ", ".join(f"{k} {v / n:g}" for k, v in sorted(methods.items())))
    print(f"the tick's own summary: {skip[:300]}")

    # What dominates: one tick at the largest N on a single worker thread, so cProfile sees the work.
    sensor_def = sensor_for(rows[-1][0], 1)
    cursor = tick(sensor_def, None).cursor
    prof = cProfile.Profile()
    c0 = cpu_seconds(sandbox_pid)
    t0 = time.perf_counter()
    prof.enable()
    tick(sensor_def, cursor)
    prof.disable()
    wall = time.perf_counter() - t0
    if args.profile_out:
        prof.dump_stats(args.profile_out)
    sb_cpu = cpu_seconds(sandbox_pid) - c0
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    print(f"\nprofile of one tick at {rows[-1][0]} environments, 1 worker thread: {wall:.2f}s wall, "
          f"sandbox CPU {sb_cpu:.2f}s")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])
    by_area: dict[str, float] = {}
    for (filename, _, func), (_, _, tottime, _, _) in stats.stats.items():
        by_area[_area(filename, func)] = by_area.get(_area(filename, func), 0.0) + tottime
    print("\nself time by area (one worker thread):")
    for area, secs in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"  {area:<56} {secs:6.2f}s  {secs / wall:5.0%}")

    target = next((t for size, t in sorted(TARGETS_S.items()) if rows[-1][0] <= size), max(TARGETS_S.values()))
    ok = rows[-1][1] < target and rows[-1][2] <= rows[0][2] + 0.5 and rows[-1][6] <= OWN_CPU_TARGET_MS
    print(f"\n{'OK' if ok else 'MISSED'}: {rows[-1][0]} environments tick in {rows[-1][1]:.2f}s (target < "
          f"{target:g}s); calls per environment {rows[0][2]:.1f} at {rows[0][0]} -> {rows[-1][2]:.1f} at "
          f"{rows[-1][0]}; gpuplat CPU {rows[-1][6]:.1f} ms per environment (target <= {OWN_CPU_TARGET_MS:g})")
    return 0 if ok else 1


def soak(ticks: int, sensor_def, tick, n: int) -> None:
    """`ticks` ticks of one sensor in this process: its RSS after warm-up and at the end (medians of 50 ticks), per
    tenth of the soak, and what a full collection and the C allocator give back at the end."""
    cursor, rss, times = None, [], []
    for _ in range(ticks):
        t0 = time.perf_counter()
        cursor = tick(sensor_def, cursor).cursor
        times.append(time.perf_counter() - t0)
        rss.append(rss_mib())
    # Medians of 50 ticks: a tick's transient allocations lift the RSS read after it by a few MiB now and
    # then (the allocator keeps a freed block a while); ten ticks' median caught such a run of ticks.
    warm, span = min(20, ticks // 5), max(1, min(50, ticks // 5))
    head, tail = rss[warm:warm + span], rss[-span:]
    print(f"\nsoak: {ticks} ticks over {n} environments in one process, {statistics.median(times):.2f} s/tick "
          f"(median); RSS after {warm} warm-up ticks {statistics.median(head):.1f} MiB, at the end "
          f"{statistics.median(tail):.1f} MiB (medians of {span} ticks), max {max(rss):.1f} MiB")
    step = max(1, ticks // 10)
    print("soak: RSS median (max) per window of ticks: " + ", ".join(
        f"{i + 1}-{min(i + step, ticks)} {statistics.median(rss[i:i + step]):.1f} ({max(rss[i:i + step]):.1f})"
        for i in range(0, ticks, step)))
    import ctypes
    import gc
    gc.collect()
    collected = rss_mib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the C heap holds free but has not given back to the system
    print(f"soak: at the end {rss[-1]:.1f} MiB; after a full collection {collected:.1f}; after malloc_trim(0) "
          f"{rss_mib():.1f} (memory freed but kept by the allocator, not held by gpuplat)")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _area(filename: str, func: str) -> str:
    if filename == "~":  # a builtin: where the time goes is in its name
        if any(k in func for k in ("recv", "readinto", "sendall", "connect", "select", "poll", "acquire")):
            return "waiting on the sandbox (socket reads, the server's work)"
        return "builtins (json, re, ...)"
    for key, area in (("/kubernetes/", "kubernetes client (deserializing models)"),
                      ("/google/", "Google clients (proto-plus, protobuf, api_core, auth)"),
                      ("/proto/", "Google clients (proto-plus, protobuf, api_core, auth)"),
                      ("/urllib3/", "HTTP clients (urllib3, requests, http.client)"),
                      ("/requests/", "HTTP clients (urllib3, requests, http.client)"),
                      ("/http/", "HTTP clients (urllib3, requests, http.client)"),
                      ("/email/", "HTTP clients (urllib3, requests, http.client)"),
                      ("/yaml/", "YAML (environment configs, kubeconfigs)"),
                      ("/pydantic", "config validation (pydantic)"),
                      ("/dagster/", "dagster"), ("/sqlalchemy/", "dagster (instance queries)")):
        if key in filename:
            return area
    if filename.startswith(str(ROOT)) and "/.venv/" not in filename:
        return "gpuplat (observe, plan, sensor)"
    return "other"


if __name__ == "__main__":
    sys.exit(main())
