"""The production instance (deploy/dagster.yaml) against a real PostgreSQL server on loopback.

A PostgreSQL cluster is created in a temporary folder (initdb, pg_ctl; as the `postgres` user when
run as root, because initdb refuses root), with password authentication on 127.0.0.1 so the
DAGSTER_PG_PASSWORD path is real. Then:

- deploy/dagster.yaml loads as it is up to the K8sRunLauncher, which loads in-cluster config when
  it is constructed: outside a pod it fails with exactly "Service host/port is not set.";
- the same file with only `load_incluster_config: true` swapped for a kubeconfig of a sandbox
  cluster loads for real (`dagster instance info`), with every K8s value taken from the env;
- `dagster asset materialize` writes its run and materialization to PostgreSQL;
- `dagster-daemon run` heartbeats into PostgreSQL;
- the K8sRunLauncher, driven by the daemon's run queue, creates one Kubernetes Job per run in the
  sandbox's Kubernetes API, never two at once for one environment (partition).

Skipped only when no PostgreSQL server binaries are installed (`.ci/run` installs them).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SandboxProcess, free_port, kube_api, shipped_environment, stop_group

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
PG_USER = "gpuplat"
PG_PASSWORD = "s3cret-for-tests"
DB_MAIN = "dagster"
DB_K8S = "dagster_k8s"
IN_CLUSTER_LINE = "load_incluster_config: true"
IN_CLUSTER_ERROR = "kubernetes.config.config_exception.ConfigException: Service host/port is not set."
K8S_ENV = {
    "DAGSTER_K8S_JOB_IMAGE": "registry.example.com/gpuplat:test",
    "DAGSTER_K8S_JOB_NAMESPACE": "default",
    "DAGSTER_K8S_SERVICE_ACCOUNT": "dagster",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
}


# ---- PostgreSQL ----------------------------------------------------------------------------------

def _pg_bindir() -> Path | None:
    """Where initdb and pg_ctl live: pg_config's bindir, Debian's versioned dirs, or PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password (scram) authentication."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        # Not under pytest's tmp_path: its 0700 parents would keep the postgres user out.
        self.dir = Path(tempfile.mkdtemp(prefix="gpuplat-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root ("cannot be run as root"): run the server as postgres.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run the server as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            runuser = shutil.which("runuser")
            self.as_user = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
            self._uid_gid = (pw.pw_uid, pw.pw_gid)
        else:
            self._uid_gid = None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_user and self.as_user[0] == "su":
            cmd = [*self.as_user, shlex.join(cmd)]
        else:
            cmd = [*self.as_user, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self._uid_gid:
            os.chown(pwfile, *self._uid_gid)
        out = self._run(self.bindir / "initdb", "-D", self.data, "-U", PG_USER, "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions")
        assert out.returncode == 0, f"initdb failed:\n{out.stdout}\n{out.stderr}"
        pwfile.unlink()
        last = ""
        for _ in range(3):  # a free port can be taken between probing and binding: try another
            self.port = free_port()
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            out = self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                            "-o", opts, "start", timeout=90)
            if out.returncode == 0:
                return
            last = out.stdout + out.stderr + (self.log.read_text() if self.log.exists() else "")
        raise AssertionError(f"pg_ctl start failed:\n{last}")

    def stop(self) -> None:
        if self.data.exists():
            self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, db: str = "postgres"):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=PG_PASSWORD, dbname=db)

    def create_db(self, name: str) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def query(self, db: str, sql: str, args: tuple = ()) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def env(self, db: str) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": PG_USER,
                "DAGSTER_PG_PASSWORD": PG_PASSWORD, "DAGSTER_PG_DB": db}


@pytest.fixture(scope="module")
def postgres():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) found via pg_config --bindir, "
                    "/usr/lib/postgresql/*/bin or PATH: apt-get install postgresql (.ci/run does)")
    pg = Postgres(bindir)
    try:
        pg.start()
        pg.create_db(DB_MAIN)
        pg.create_db(DB_K8S)
        yield pg
    finally:
        pg.stop()


# ---- sandbox, environments, processes ------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def sandbox(work):
    sb = SandboxProcess(work / "sandbox")
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def environments(work):
    """The shipped sandbox environment, plus a second environment to show the queue is per partition, and a
    production one (profile prod, so its trust zone is prod) for the launcher's trust zones."""
    root = work / "environments"
    shipped_environment("sandbox", root)
    shipped_environment("sandbox", root, "other")
    cfg = shipped_environment("sandbox", root, "prod-eu")
    cfg["profile"] = "prod"
    (root / "prod-eu" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _env(pg: Postgres, db: str, home: Path, sandbox: SandboxProcess, environments: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "GPUPLAT_", "KUBERNETES_"))}
    env.update(pg.env(db))
    env.update(DAGSTER_HOME=str(home), GPUPLAT_SANDBOX_DIR=str(sandbox.state_dir),
               GPUPLAT_ENVIRONMENTS=str(environments), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _environ(env: dict):
    """DagsterInstance.from_config resolves `env:` config from os.environ: set it for one block."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DAGSTER_", "GPUPLAT_"))})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _default_sigint():
    # A shell that starts pytest in the background leaves SIGINT ignored, and dagster-daemon maps
    # SIGTERM to whatever SIGINT does: without this it would ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _daemon(env: dict, log: Path):
    """`dagster-daemon run` in its own process group, stopped (SIGTERM, then SIGKILL) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([_tool("dagster-daemon"), "run", "-m", "gpuplat_assets.definitions"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_default_sigint)
    try:
        yield proc
    finally:
        stop_group(proc)


def _home(work: Path, name: str, text: str) -> Path:
    home = work / name
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(text)
    return home


def _local_launcher_yaml() -> str:
    """deploy/dagster.yaml with the DefaultRunLauncher instead of gpuplat's K8s launcher (no cluster here)."""
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    assert config["run_launcher"]["class"] == "ZonedK8sRunLauncher"
    config["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    return yaml.safe_dump(config, sort_keys=False)


def _kubeconfig_yaml(kubeconfig: Path) -> str:
    """deploy/dagster.yaml with one change: the sandbox cluster's kubeconfig instead of in-cluster config."""
    text = DEPLOY_YAML.read_text()
    assert text.count(IN_CLUSTER_LINE) == 1, f"deploy/dagster.yaml should say `{IN_CLUSTER_LINE}` once"
    indent = text.split(IN_CLUSTER_LINE)[0].rsplit("\n", 1)[1]
    return text.replace(IN_CLUSTER_LINE, f"load_incluster_config: false\n{indent}kubeconfig_file: {kubeconfig}")


@pytest.fixture(scope="module")
def local_home(work, postgres, sandbox, environments):
    home = _home(work, "home-local", _local_launcher_yaml())
    return home, _env(postgres, DB_MAIN, home, sandbox, environments)


# ---- (a) deploy/dagster.yaml loads ---------------------------------------------------------------

def test_deploy_instance_loads_up_to_the_in_cluster_kube_config(work, postgres, sandbox, environments):
    """The file as shipped: PostgreSQL storage connects, then only the in-cluster kube config is missing."""
    home = _home(work, "home-deploy-as-is", DEPLOY_YAML.read_text())
    env = _env(postgres, DB_MAIN, home, sandbox, environments, **K8S_ENV)
    out = _run([_tool("dagster"), "instance", "info"], env)
    # The K8sRunLauncher loads kube config in its constructor; outside a pod there is none.
    assert out.returncode != 0, out.stdout
    assert out.stderr.strip().splitlines()[-1] == IN_CLUSTER_ERROR, out.stderr[-3000:]
    # Everything before the launcher worked: the storage reached PostgreSQL and created its schema.
    tables = {r[0] for r in postgres.query(DB_MAIN, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "event_logs", "daemon_heartbeats", "jobs", "job_ticks"} <= tables, tables


def test_deploy_instance_loads_for_real_with_a_kubeconfig(work, postgres, sandbox, environments):
    """Only in-cluster config swapped for a sandbox cluster's kubeconfig: the whole instance loads."""
    kubeconfig = work / "kubeconfig-byo"
    kubeconfig.write_text(sandbox.get("admin", "/sandbox/kubeconfig?cluster=byo-gpu"))
    home = _home(work, "home-deploy-kubeconfig", _kubeconfig_yaml(kubeconfig))
    env = _env(postgres, DB_MAIN, home, sandbox, environments, **K8S_ENV)
    out = _run([_tool("dagster"), "instance", "info"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    for expected in ("run_storage: PostgresRunStorage", "event_log_storage: PostgresEventLogStorage",
                     "schedule_storage: PostgresScheduleStorage", "class: ZonedK8sRunLauncher"):
        assert expected in out.stdout, out.stdout
    info = yaml.safe_load(out.stdout.split("Storage schema state:")[1].split("\n", 2)[2])
    for storage, state in info["schema"].items():
        assert state["current"] == state["latest"], (storage, state)

    from dagster import DagsterInstance
    from dagster_k8s import K8sRunLauncher
    with _environ(env):
        instance = DagsterInstance.from_config(str(home))
        try:
            queue = instance.get_concurrency_config().run_queue_config
            launcher = instance.run_launcher
            assert isinstance(launcher, K8sRunLauncher)
            assert (launcher.job_image, launcher.job_namespace, launcher.instance_config_map,
                    launcher.postgres_password_secret, launcher.dagster_home) == (
                K8S_ENV["DAGSTER_K8S_JOB_IMAGE"], K8S_ENV["DAGSTER_K8S_JOB_NAMESPACE"],
                K8S_ENV["DAGSTER_K8S_INSTANCE_CONFIG_MAP"], K8S_ENV["DAGSTER_K8S_PG_PASSWORD_SECRET"], str(home))
        finally:
            instance.dispose()
    assert queue.tag_concurrency_limits == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


# ---- (b) a materialization is stored in PostgreSQL -----------------------------------------------

def test_materialization_is_stored_in_postgres(local_home, postgres):
    home, env = local_home
    out = _run([_tool("dagster"), "asset", "materialize", "-m", "gpuplat_assets", "--select", "apis_enabled",
                "--partition", "sandbox"], env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "RUN_SUCCESS" in out.stdout + out.stderr

    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    with _environ(env):
        instance = DagsterInstance.from_config(str(home))
        try:
            runs = instance.get_runs()
            event = instance.get_latest_materialization_event(AssetKey("apis_enabled"))
            storage = type(instance.run_storage).__name__, type(instance.event_log_storage).__name__
        finally:
            instance.dispose()
    assert storage == ("PostgresRunStorage", "PostgresEventLogStorage")
    assert [(r.status, r.tags.get("dagster/partition")) for r in runs] == [(DagsterRunStatus.SUCCESS, "sandbox")]
    assert event is not None and event.run_id == runs[0].run_id
    assert event.asset_materialization.partition == "sandbox"
    assert "fingerprint" in event.asset_materialization.metadata

    # And straight from the tables, without Dagster in between.
    rows = postgres.query(DB_MAIN, "SELECT run_id, status FROM runs")
    assert rows == [(runs[0].run_id, "SUCCESS")]
    mats = postgres.query(DB_MAIN, "SELECT run_id, partition FROM event_logs WHERE dagster_event_type = "
                                   "'ASSET_MATERIALIZATION' AND asset_key = %s", (AssetKey("apis_enabled").to_string(),))
    assert mats == [(runs[0].run_id, "sandbox")]


# ---- (c) the daemon heartbeats into PostgreSQL ---------------------------------------------------

def test_daemon_heartbeats_into_postgres(local_home, postgres, work):
    home, env = local_home
    from dagster import DagsterInstance
    started = time.time()
    wanted = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"}
    seen: dict = {}
    log = work / "daemon-local.log"
    with _daemon(env, log) as proc, _environ(env):
        instance = DagsterInstance.from_config(str(home))
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not wanted <= set(seen):
                assert proc.poll() is None, f"dagster-daemon exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                seen = {t: hb for t, hb in instance.get_daemon_heartbeats().items() if hb.timestamp >= started - 1}
                time.sleep(1)
        finally:
            instance.dispose()
    assert wanted <= set(seen), f"heartbeats seen: {sorted(seen)}\n{log.read_text()[-3000:]}"
    rows = postgres.query(DB_MAIN, "SELECT daemon_type FROM daemon_heartbeats")
    assert wanted <= {r[0] for r in rows}


# ---- (d) the K8sRunLauncher creates one Job per run, one run per environment at a time -----------

def _jobs(sandbox: SandboxProcess, tmp_path: Path) -> list[dict]:
    import kubernetes

    with kube_api(sandbox.urls, tmp_path, "byo-gpu") as api:
        jobs = kubernetes.client.BatchV1Api(api).list_namespaced_job(K8S_ENV["DAGSTER_K8S_JOB_NAMESPACE"])
        return [api.sanitize_for_serialization(j) for j in jobs.items]


def test_k8s_launcher_runs_one_job_per_environment_at_a_time(work, postgres, sandbox, environments):
    kubeconfig = work / "kubeconfig-byo-launch"
    kubeconfig.write_text(sandbox.get("admin", "/sandbox/kubeconfig?cluster=byo-gpu"))
    home = _home(work, "home-k8s-launch", _kubeconfig_yaml(kubeconfig))
    env = _env(postgres, DB_K8S, home, sandbox, environments, **K8S_ENV)
    partitions = {"sandbox-1": "sandbox", "sandbox-2": "sandbox", "other": "other", "prod-eu": "prod-eu"}
    run_ids = {name: f"00000000-0000-4000-8000-00000000000{i}" for i, name in enumerate(partitions, 1)}
    # An empty database gets its schema once first (deploy/README.md, Install): four processes
    # creating it at once race, and dagster-postgres retries only DuplicateTable (42P07), not the
    # DuplicateObject (42710) PostgreSQL raises for a table's row type (dagster_postgres/utils.py,
    # retry_pg_creation_fn).
    migrate = _run([_tool("dagster"), "instance", "migrate"], env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    launches = {name: subprocess.Popen(
        [_tool("dagster"), "job", "launch", "-m", "gpuplat_assets.definitions", "-j", "substrate",
         "--run-id", run_ids[name], "--tags", json.dumps({"dagster/partition": partitions[name]})],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in partitions}
    for name, proc in launches.items():
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"dagster job launch ({name}) failed:\n{output[-3000:]}"
    from dagster import DagsterInstance, DagsterRunStatus

    def statuses() -> dict:
        with _environ(env):
            instance = DagsterInstance.from_config(str(home))
            try:
                return {n: instance.get_run_by_id(r).status for n, r in run_ids.items()}
            finally:
                instance.dispose()

    assert set(statuses().values()) == {DagsterRunStatus.QUEUED}, "the QueuedRunCoordinator should queue runs"
    log = work / "daemon-k8s.log"
    dequeue_pass = "checking tag concurrency limits for queued runs"
    with _daemon(env, log) as proc:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(
                [j for j in _jobs(sandbox, work) if j["metadata"]["labels"].get("dagster/run-id") in run_ids.values()]) < 3:
            assert proc.poll() is None, f"dagster-daemon exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        # Two more dequeue passes: the other run of `sandbox` must stay queued while the launched one
        # holds the environment (no pod ever runs in the sandbox, so that run stays STARTING).
        passes = log.read_text().count(dequeue_pass)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count(dequeue_pass) < passes + 2:
            time.sleep(0.5)
        assert log.read_text().count(dequeue_pass) >= passes + 2, log.read_text()[-3000:]
        jobs = _jobs(sandbox, work)
    # Only this test's runs (a sensor of the code location could start runs of its own).
    by_run = {j["metadata"]["labels"].get("dagster/run-id"): j for j in jobs}
    by_run = {r: j for r, j in by_run.items() if r in run_ids.values()}
    final = statuses()
    launched = {n for n, r in run_ids.items() if r in by_run}
    # One of the two sandbox runs (whichever was queued first) and the other environments' runs.
    assert len(launched) == 3 and {"other", "prod-eu"} <= launched, (sorted(by_run), log.read_text()[-3000:])
    (waiting,) = {"sandbox-1", "sandbox-2"} - launched
    assert final[waiting] == DagsterRunStatus.QUEUED, final
    assert all(final[n] != DagsterRunStatus.QUEUED for n in launched), final

    job = by_run[run_ids["other"]]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env_vars = {e["name"]: e for e in container["env"]}
    assert container["image"] == K8S_ENV["DAGSTER_K8S_JOB_IMAGE"]
    # One identity per trust zone (gpuplat_deploy.launcher, zones from deploy/dagster.yaml): the dev
    # environment's run pod runs as gpuplat-dev, the prod one's as gpuplat-prod, each told its zone.
    assert pod["serviceAccountName"] == "gpuplat-dev"
    assert env_vars["GPUPLAT_TRUST_ZONE"]["value"] == "dev"
    prod_pod = by_run[run_ids["prod-eu"]]["spec"]["template"]["spec"]
    (prod_container,) = prod_pod["containers"]
    assert prod_pod["serviceAccountName"] == "gpuplat-prod"
    assert {e["name"]: e.get("value") for e in prod_container["env"]}["GPUPLAT_TRUST_ZONE"] == "prod"
    assert K8S_ENV["DAGSTER_K8S_SERVICE_ACCOUNT"] not in {pod["serviceAccountName"], prod_pod["serviceAccountName"]}
    assert job["metadata"]["namespace"] == K8S_ENV["DAGSTER_K8S_JOB_NAMESPACE"]
    assert env_vars["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": K8S_ENV["DAGSTER_K8S_PG_PASSWORD_SECRET"], "key": "postgresql-password"}
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB"):
        assert env_vars[name]["value"] == env[name]
    assert env_vars["DAGSTER_HOME"]["value"] == str(home)
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    # The password is only ever a secret reference: not in the Job, not in the serialized instance.
    assert PG_PASSWORD not in json.dumps(job)


# ---- the Helm values, the hand-written instance and the image agree ------------------------------

def test_helm_values_agree_with_the_instance_and_the_image():
    """values.yaml, deploy/dagster.yaml and deploy/Dockerfile describe the same deployment."""
    values = yaml.safe_load((ROOT / "deploy" / "values.yaml").read_text())
    instance = yaml.safe_load(DEPLOY_YAML.read_text())
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    # The hand-written instance says it under `concurrency: runs:` (Dagster 1.10 and later); the chart
    # renders its queued run coordinator from the values.
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert queue["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    launcher = values["runLauncher"]["config"]["customRunLauncher"]
    assert values["runLauncher"]["type"] == "CustomRunLauncher"
    assert (launcher["module"], launcher["class"]) == (instance["run_launcher"]["module"], instance["run_launcher"]["class"]) \
        == ("gpuplat_deploy.launcher", "ZonedK8sRunLauncher")
    assert launcher["config"]["trust_zones"] == instance["run_launcher"]["config"]["trust_zones"]
    zone_accounts = {z["service_account_name"] for z in launcher["config"]["trust_zones"]}
    # Each zone's account is created with its own Google service account; none is the code server's.
    made = {m["metadata"]["name"]: m["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
            for m in values["extraManifests"] if m["kind"] == "ServiceAccount"}
    assert set(made) == zone_accounts and len(set(made.values())) == len(made)
    assert values["global"]["serviceAccountName"] not in zone_accounts
    assert values["serviceAccount"]["annotations"]["iam.gke.io/gcp-service-account"] not in made.values()
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    # What the image runs is checked against deploy/Dockerfile in tests/deploy/test_image.py.
