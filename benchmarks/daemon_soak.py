"""Soak: the real dagster-daemon running gpuplat's sensors and schedule for many ticks, drift injected and
removed at random, the daemon restarted on the way.

Starts `python -m sandbox serve`, writes the three shipped sandbox environments (GKE, Hetzner in
`remediation: report`, bring-your-own) to a temporary folder, materializes each with the CLI, and runs
`dagster-daemon run` over a workspace with the drift sensor and the scale-to-zero guard at 5 s (the
daemon's shortest sensor loop) and the drift-checks schedule every minute. Every 15-45 s (seeded) it
makes a drift by hand in an environment that has none open (a StorageClass no longer default, on any
of the three; the GPU pool's autoscaling minimum, on GKE) and checks that the drift sensor saw it
within two of its ticks: an observation naming it (a repair run started, or reported), or a
materialization of that piece by a run that started after it was made (a repair run already queued for
an earlier drift of the same kind repairs it, and the sensor rightly starts no second run for it); a
reported one is then undone by hand. The daemon is restarted `--restarts` times, evenly spread.

Prints: ticks per sensor and schedule, failed ticks (with their errors), every injection's ticks to
report, and the RSS of the daemon and of its code server, each on its own (sampled every 10 s: after warm-up
and at the end of each daemon's life).

    python benchmarks/daemon_soak.py [--ticks 1000] [--restarts 2] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.assets.conftest import Admin  # noqa: E402
from tests.conftest import SandboxProcess, shipped_environment, stop_group  # noqa: E402

BIN = Path(sys.executable).parent
INTERVAL_S = 5
ENVS = {  # environment -> (kube cluster id in the sandbox, its default StorageClass)
    "sandbox": ("gke_gpuplat-sandbox_us-central1-a_ai-dev", "standard-rwo"),
    "sandbox-hetzner": ("hetzner-gpu", "hcloud-volumes"),
    "sandbox-byo": ("byo-gpu", "local-path"),
}
GKE_CLUSTER = "projects/gpuplat-sandbox/locations/us-central1-a/clusters/ai-dev"
REPORTS = {"sandbox-hetzner"}  # remediation: report (the others repair by a run)
SENSORS = ("drift_sensor", "scale_to_zero_guard", "drift_checks_schedule")


@dataclass
class Injection:
    env: str
    asset: str
    what: str
    at: float
    seen_at: float | None = None
    ticks_to_report: int | None = None
    undone: bool = False
    how: str = ""  # "reported" (an observation) or "repaired" (a materialization) first


@dataclass
class Life:
    """One daemon process: its RSS samples (seconds since its start, MiB of the daemon, MiB of its code
    server) and when it started."""
    started: float
    rss: list[tuple[float, float, float]] = field(default_factory=list)


def rss_mib(pid: int) -> tuple[float, float]:
    """The RSS of the daemon `pid` and of its code server (MiB), not of the short-lived run workers.

    The daemon replaces its code server now and then (a workspace reload starts a new `dagster api grpc`
    and lets the old one exit once idle), so two can be alive for a while: counting both would read as
    growth. The code server measured is the newest child, the one ticks go to.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    daemon, servers = 0, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.parent.name) == pid:
            daemon = int(fields[21]) * page
        elif int(fields[1]) == pid and "api grpc" in cmd:
            servers.append((int(fields[19]), int(fields[21]) * page))  # (start time in clock ticks, RSS)
    return daemon / 2 ** 20, (max(servers)[1] / 2 ** 20 if servers else 0.0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ticks", type=int, default=1000, help="ticks of the two sensors and the schedule, together")
    p.add_argument("--restarts", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="gpuplat-soak-", dir="/tmp"))
    sandbox = SandboxProcess(tmp / "sandbox")
    urls = sandbox.start()
    admin = Admin(urls)
    try:
        return soak(args, rng, tmp, sandbox, admin)
    finally:
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def soak(args, rng: random.Random, tmp: Path, sandbox: SandboxProcess, admin: Admin) -> int:
    import yaml
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.scheduler.instigation import TickStatus

    envs = tmp / "environments"
    for name in ENVS:
        shipped_environment(name, envs)
    home = tmp / "home"
    home.mkdir()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["storage"]["sqlite"]["base_dir"] = str(tmp / "storage")
    config["local_artifact_storage"]["config"]["base_dir"] = str(tmp / "storage" / "artifacts")
    config["compute_logs"]["config"]["base_dir"] = str(tmp / "storage" / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = tmp / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "gpuplat_assets.definitions", "working_directory": str(ROOT), "location_name": "gpuplat"}}]}))
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GPUPLAT_AUTO_APPROVE", "KUBECONFIG")}
    env.update(DAGSTER_HOME=str(home), GPUPLAT_ENVIRONMENTS=str(envs), GPUPLAT_SANDBOX_DIR=str(sandbox.state_dir),
               TMPDIR=str(tmp), PYTHONPATH=str(ROOT), GPUPLAT_DRIFT_INTERVAL_S=str(INTERVAL_S),
               GPUPLAT_GUARD_INTERVAL_S=str(INTERVAL_S), GPUPLAT_DRIFT_CHECKS_CRON="* * * * *")
    for name in ENVS:
        done = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "gpuplat_assets.definitions",
                               "--select", "*", "--partition", name], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        if done.returncode:
            print(f"materializing {name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
    print(f"materialized {', '.join(ENVS)}")
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))

    def ticks() -> dict[str, list]:
        out = {}
        for state in instance.all_instigator_state():
            if state.name in SENSORS:
                out[state.name] = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100_000)
        return out

    def total(t: dict) -> int:
        return sum(len(v) for v in t.values())

    lives: list[Life] = []
    injections: list[Injection] = []
    log = open(tmp / "daemon.log", "a")

    def start() -> subprocess.Popen:
        lives.append(Life(time.monotonic()))
        return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], cwd=work, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def drift(env_name: str, asset: str, make: bool) -> None:
        if asset == "gpu_pool":
            admin.call("POST", "/sandbox/gke/drift/node-pool", {"cluster": GKE_CLUSTER, "nodePool": "gpu-l4",
                                                                "patch": {"autoscaling": {"minNodeCount": 1 if make else 0}}})
        else:
            cluster, sc = ENVS[env_name]
            admin.call("POST", f"/sandbox/kube/{cluster}/drift", {
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "name": sc, "action": "annotate",
                "key": "storageclass.kubernetes.io/is-default-class", "value": "false" if make else "true"})

    def observed_after(inj: Injection) -> float | None:
        """When the drift was first reported (an observation with its plan) or repaired (a materialization
        of the asset: a repair run started for an earlier drift of the same kind that was still queued
        repairs this one too, and the sensor rightly starts no second run for it)."""
        key = AssetKey(inj.asset)
        observed = instance.fetch_observations(AssetRecordsFilter(asset_key=key, asset_partitions=[inj.env]),
                                               limit=20).records
        repaired = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[inj.env]),
                                                   limit=5).records
        hits = [(r.timestamp, "reported") for r in observed
                if r.timestamp > inj.at and "plan_hash" in r.asset_observation.metadata]
        # Only a run that started after the injection saw it (one still going when it was made may have
        # applied that piece before it).
        hits += [(r.timestamp, "repaired") for r in repaired if r.timestamp > inj.at
                 and ((rec := instance.get_run_record_by_id(r.run_id)) is not None and rec.start_time is not None
                      and rec.start_time > inj.at)]
        if not hits:
            return None
        inj.how = min(hits)[1]
        return min(hits)[0]

    restart_at = [args.ticks * (i + 1) // (args.restarts + 1) for i in range(args.restarts)]
    proc = start()
    next_injection = time.time() + 60  # after warm-up
    last_sample = 0.0
    began = time.monotonic()
    try:
        while True:
            now_ticks = ticks()
            n = total(now_ticks)
            if n >= args.ticks:
                break
            if restart_at and n >= restart_at[0]:
                restart_at.pop(0)
                print(f"restarting the daemon at {n} ticks", flush=True)
                stop_group(proc)
                proc = start()
            if proc.poll() is not None:
                print("the daemon exited:\n" + (tmp / "daemon.log").read_text()[-3000:], file=sys.stderr)
                return 1
            if time.monotonic() - last_sample >= 10:
                last_sample = time.monotonic()
                lives[-1].rss.append((last_sample - lives[-1].started, *rss_mib(proc.pid)))
            open_ = [i for i in injections if i.seen_at is None or (i.env in REPORTS and not i.undone)]
            for inj in open_:
                if inj.seen_at is None:
                    seen = observed_after(inj)
                    if seen is not None:
                        inj.seen_at = seen
                        drift_ticks = [t for t in now_ticks.get("drift_sensor", []) if inj.at < t.timestamp <= seen + 1]
                        inj.ticks_to_report = len(drift_ticks)
                if inj.seen_at is not None and inj.env in REPORTS and not inj.undone:
                    drift(inj.env, inj.asset, make=False)
                    inj.undone = True
            busy = {i.env for i in injections if i.seen_at is None or time.time() - i.seen_at < 30}
            free = [e for e in ENVS if e not in busy]
            if time.time() >= next_injection and free:
                target = rng.choice(free)
                asset = rng.choice(["storage_class", "gpu_pool"]) if target == "sandbox" else "storage_class"
                drift(target, asset, make=True)
                injections.append(Injection(target, asset, "made", time.time()))
                next_injection = time.time() + rng.uniform(15, 45)
            time.sleep(1)
    finally:
        stop_group(proc)
        log.close()
    wall = time.monotonic() - began

    final = ticks()
    failed = [(name, t.error.message[:300] if t.error else "") for name, ts in final.items() for t in ts
              if t.status == TickStatus.FAILURE]
    print(f"\n{total(final)} ticks in {wall / 60:.1f} min ({args.restarts} daemon restarts): "
          + ", ".join(f"{name} {len(ts)}" for name, ts in sorted(final.items())))
    print(f"failed ticks: {len(failed)}" + "".join(f"\n  {n}: {m}" for n, m in failed[:5]))
    seen = [i for i in injections if i.seen_at is not None]
    late = [i for i in seen if i.ticks_to_report > 2]
    how = {k: len([i for i in seen if i.how == k]) for k in ("reported", "repaired")}
    print(f"injected drifts: {len(injections)}; seen: {len(seen)} ({how['reported']} reported first, "
          f"{how['repaired']} repaired first); within two drift-sensor ticks: {len(seen) - len(late)}"
          + (f"; ticks to report, median {statistics.median(i.ticks_to_report for i in seen):g}, "
             f"max {max(i.ticks_to_report for i in seen)}" if seen else ""))
    for i in [i for i in injections if i.seen_at is None or i.ticks_to_report > 2]:
        print(f"  {i.env}/{i.asset} at {time.strftime('%H:%M:%S', time.gmtime(i.at))}: "
              + ("never seen" if i.seen_at is None else f"{i.ticks_to_report} ticks"))
    for k, life in enumerate(lives, 1):
        warm = [(d, c) for t, d, c in life.rss if t >= 120]
        if len(warm) >= 2:
            # Medians of the first and the last five samples after warm-up: one sample taken while a run
            # or a reload is under way says little about growth.
            head, tail = warm[:5], warm[-5:]
            for label, i in (("daemon", 0), ("code server", 1)):
                print(f"daemon {k}, {label}: RSS after 2 min warm-up {statistics.median(s[i] for s in head):.0f} MiB, "
                      f"at the end {statistics.median(s[i] for s in tail):.0f} MiB (medians of 5 samples), "
                      f"max {max(s[i] for s in warm):.0f} MiB over {len(warm)} samples "
                      f"({(life.rss[-1][0]) / 60:.1f} min)")
    unseen = [i for i in injections[:-1] if i.seen_at is None]  # the last may be injected just before the end
    ok = not failed and not late and not unseen
    print(json.dumps({"ticks": total(final), "failed_ticks": len(failed), "injections": len(injections),
                      "late": len(late), "unseen": len(unseen)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
