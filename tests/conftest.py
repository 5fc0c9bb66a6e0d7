"""Shared fixtures: every test that needs a cloud starts its own sandbox on free ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.platform_tree import example_platform  # noqa: E402


def shipped_environment(name: str, envs: Path, as_name: str | None = None) -> dict:
    """A shipped environment's config copied into `envs` (as `as_name`), with a platform tree beside
    `envs` for it: the copy reads the platform checkout that holds its environments folder."""
    cfg = yaml.safe_load((ROOT / "environments" / name / "config.yaml").read_text())
    cfg["substrate"].pop("platform_repo", None)
    (envs / (as_name or name)).mkdir(parents=True, exist_ok=True)
    (envs / (as_name or name) / "config.yaml").write_text(yaml.safe_dump(cfg))
    example_platform(envs.parent, [as_name or name], cfg["cluster"]["projectID"])
    return cfg


from sandbox.app import Sandbox  # noqa: E402


class Platform:
    """One test's platform checkout: its `environments/` folder (GPUPLAT_ENVIRONMENTS) and, beside it,
    the example platform tree each environment's fork files come from. Environments are found at run
    time, so a test writes only the ones it uses, and no test sees another's."""

    def __init__(self, root: Path):
        self.root = root
        self.envs = root / "environments"
        self.envs.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.envs / name / "config.yaml"

    def write(self, name: str, config: dict | str, project: str | None = None) -> Path:
        """Write `name`'s config (a mapping, or raw text for a broken one) and its fork tree."""
        if isinstance(config, dict):
            project = project or (config.get("cluster") or {}).get("projectID")
        example_platform(self.root, [name], project or "gpuplat-test")
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        return path


@pytest.fixture
def platform(tmp_path, monkeypatch) -> Platform:
    """This test's environments folder, as GPUPLAT_ENVIRONMENTS points at it."""
    p = Platform(tmp_path / "platform")
    monkeypatch.setenv("GPUPLAT_ENVIRONMENTS", str(p.envs))
    return p

# A user's platform fork (the seed platform's own files). Only the tests that check gpuplat against a
# real fork read one; everything else a test needs lives in this project. Default: the seed platform
# snapshot beside the project, where developers and CI have it.
FORK_VAR = "GPUPLAT_PLATFORM_FORK"
DEFAULT_FORK = ROOT.parent / "shared" / "fixtures" / "seed-platform"


# The slow tiers: not in the README's test command (the tiers a contributor runs on every change), run
# by CI (`.ci/run`) with `-m "browser or postgres or conformance or daemon or slow"`. A directory or file
# gives its tests the marker here; a single slow test carries `@pytest.mark.slow` itself.
TIERS = {
    "tests/e2e/": "browser",  # Chromium drives the Dagster UI
    "tests/deploy/": "postgres",  # a PostgreSQL server, the webserver, the daemon, the K8s run launcher
    "tests/conformance/": "conformance",  # the real gcloud, kubectl and gke-gcloud-auth-plugin
    "tests/sensors/test_daemon_e2e.py": "daemon",  # dagster-daemon run over a workspace
    "tests/sensors/test_daemon_cycles.py": "daemon",  # many report -> clear cycles under dagster-daemon run
}
SLOW_TIERS = "browser or postgres or conformance or daemon or slow"
# Tests CI may see skipped, each with why. Any other skip under GPUPLAT_CI=1 fails the run: a skip in CI
# is otherwise a silent pass.
CI_ALLOWED_SKIPS = {
    # The fork tests need a checkout of the seed platform (DEFAULT_FORK, or --platform-fork); a clean
    # clone has none of its own, and pytest's -ra summary names each such skip.
    "no platform fork": "the fork tier runs only where a platform checkout is given",
}


def pytest_configure(config):
    # Every Dagster event is a SQLite commit, and each commit an fsync on disk: on this project's tests
    # that was a sixth of the wall time. Temporary files (tmp_path, the sandboxes' state, the test
    # instances, the CLI runs' DAGSTER_HOME) go to memory where /dev/shm is writable; nothing under test
    # depends on durability. GPUPLAT_TEST_TMPDIR overrides (a directory, or "" for the system default).
    chosen = os.environ.get("GPUPLAT_TEST_TMPDIR", "/dev/shm")
    if chosen and config.option.basetemp is None and os.path.isdir(chosen) and os.access(chosen, os.W_OK):
        os.environ["TMPDIR"] = chosen
        tempfile.tempdir = None  # recomputed from TMPDIR on next use


# The slow tiers' longest tests (minutes each, under the real daemon), started first: xdist hands out tests
# in collection order, and one of these begun last would hold the whole run for its length after every
# other worker has finished. Only these: the other daemon tests started beside them as well put four
# daemons on two cores at once, and cycles then ran past their bound.
LONGEST_FIRST = ("tests/sensors/test_daemon_cycles.py",)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        where = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if where.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file, and of every other file, is kept
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if not path.is_relative_to(ROOT):
            continue
        where = path.relative_to(ROOT).as_posix()
        for prefix, marker in TIERS.items():
            if where.startswith(prefix):
                item.add_marker(getattr(pytest.mark, marker))


_SILENT_SKIPS: list[str] = []


def pytest_runtest_logreport(report):
    # Under xdist the controller sees every worker's reports here too.
    if os.environ.get("GPUPLAT_CI") == "1" and report.skipped and not getattr(report, "wasxfail", None):
        if not any(allowed in str(report.longrepr) for allowed in CI_ALLOWED_SKIPS):
            _SILENT_SKIPS.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SILENT_SKIPS and exitstatus == 0 and not hasattr(session.config, "workerinput"):
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _SILENT_SKIPS:
        terminalreporter.write_line(f"CI: {len(_SILENT_SKIPS)} test(s) skipped without being on CI_ALLOWED_SKIPS "
                                    f"(tests/conftest.py), which fails the run: " + ", ".join(_SILENT_SKIPS[:10]),
                                    red=True)


def pytest_addoption(parser):
    parser.addoption("--platform-fork", default=None,
                     help=f"a checkout of the seed platform (or your fork) for the fork tests; also {FORK_VAR}; "
                          f"default {DEFAULT_FORK} when it exists")


def fork_path(config) -> Path | None:
    given = config.getoption("--platform-fork") or os.environ.get(FORK_VAR)
    if given:
        return Path(given).resolve()
    return DEFAULT_FORK if DEFAULT_FORK.is_dir() else None


@pytest.fixture(scope="session")
def platform_fork(request) -> Path:
    """The platform fork the fork tests run against; they skip, saying how to run them, without one."""
    path = fork_path(request.config)
    if path is None:
        pytest.skip(f"no platform fork: run with --platform-fork PATH (or {FORK_VAR}=PATH) pointing at a checkout "
                    f"of the seed platform to run the fork tests")
    if not (path / "clusters").is_dir() or not (path / "environments").is_dir():
        pytest.fail(f"{path} is not a platform checkout: it has no clusters/ and environments/", pytrace=False)
    return path


from sandbox.app import EPHEMERAL_PORTS as EPHEMERAL  # noqa: E402


@pytest.fixture
def sandbox(tmp_path):
    """An in-process sandbox on free ports with its state under tmp_path."""
    sb = Sandbox(tmp_path / "sandbox-state", ports=EPHEMERAL)
    sb.start(tmp_path / "sandbox-state" / "ports.json")
    yield sb
    sb.stop()


def _urls(target) -> dict[str, str]:
    return target if isinstance(target, dict) else target.urls()


def admin(target, method: str, path: str, body=None):
    """Call the sandbox's admin API (`target`: a Sandbox or its URL map); JSON decoded, else text."""
    req = urllib.request.Request(_urls(target)["admin"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        ctype = resp.headers.get("Content-Type", "")
    return json.loads(raw) if "json" in ctype else raw.decode()


SANDBOX_PROJECTS = ("gpuplat-test", "gpuplat-sandbox", "p", "other-project", "exact")
ALL_SERVICES = ["serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com", "container.googleapis.com",
                "compute.googleapis.com", "secretmanager.googleapis.com", "cloudbilling.googleapis.com",
                "iam.googleapis.com", "iamcredentials.googleapis.com", "artifactregistry.googleapis.com",
                "cloudbuild.googleapis.com"]


def enable_all(target) -> None:
    """Every API the tests call, enabled in their projects (`target`: a Sandbox or its URL map), for tests
    of the APIs themselves: a new sandbox project, like a new GCP project, has only the bootstrap APIs."""
    for project in SANDBOX_PROJECTS:
        admin(target, "POST", "/sandbox/projects", {"project": project, "enabled": ALL_SERVICES})


def client_options(target, api: str) -> dict:
    """Keyword arguments that point an official Google client at one of the sandbox's APIs."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return {"transport": "rest", "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=_urls(target)[api])}


def compute_leftovers(target, project: str) -> dict[str, list[str]]:
    """The project's forwarding rules, addresses and disks by name, every scope, through the official
    Compute client's aggregated lists (what `gcloud compute ... list` and the seed's pause audit read)."""
    from google.cloud import compute_v1

    out = {}
    for collection, client, field in (("forwardingRules", compute_v1.ForwardingRulesClient, "forwarding_rules"),
                                      ("addresses", compute_v1.AddressesClient, "addresses"),
                                      ("disks", compute_v1.DisksClient, "disks")):
        api = client(**client_options(target, "compute"))
        out[collection] = sorted(i.name for _, page in api.aggregated_list(project=project) for i in getattr(page, field))
    return out


def kube_api(target, tmp_path: Path, cluster: str):
    """An official kubernetes client from the administrator kubeconfig the sandbox writes for `cluster`."""
    import kubernetes

    text = admin(target, "GET", f"/sandbox/kubeconfig?cluster={urllib.parse.quote(cluster, safe='')}")
    path = tmp_path / f"kubeconfig-{cluster.replace('/', '_')}"
    path.write_text(text)
    return kubernetes.config.new_client_from_config(config_file=str(path), persist_config=False)


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a process started with start_new_session and everything it started: SIGTERM to the group,
    SIGKILL to what is left after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SandboxProcess:
    """`python -m sandbox serve` as a child process on free ports, the way gpuplat starts it.

    Its output goes to a log file in the state dir (a pipe nobody reads would block it).
    """

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.port_file = state_dir / "ports.json"
        self.proc: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}

    def start(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        log_path = self.state_dir / "sandbox.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "serve", "--ephemeral-ports", "--state-dir", str(self.state_dir),
                 "--port-file", str(self.port_file)], cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited: {log_path.read_text()[-3000:]}")
            if self.port_file.exists():
                try:
                    self.urls = json.loads(self.port_file.read_text())
                    with urllib.request.urlopen(self.urls["admin"] + "/sandbox/clock", timeout=2):
                        return self.urls
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.05)
        raise RuntimeError("sandbox did not answer within 60 s")

    def get(self, service: str, path: str):
        """A plain GET on one of its APIs: JSON decoded, anything else (a kubeconfig) as text."""
        with urllib.request.urlopen(self.urls[service] + path, timeout=10) as resp:
            body = resp.read().decode()
        return json.loads(body) if body.lstrip().startswith("{") else body

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sandbox_process(tmp_path):
    sp = SandboxProcess(tmp_path / "sandbox-proc")
    sp.state_dir.mkdir(parents=True, exist_ok=True)
    yield sp
    sp.stop()
