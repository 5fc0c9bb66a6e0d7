"""`python -m sandbox`: a busy machine, another checkout's sandbox, stale pid files, bad bodies on every port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from resources.sandbox_runtime import SandboxStartFailed, ensure_sandbox
from sandbox.app import DEFAULT_PORTS, port_owner
from tests.conftest import ROOT


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def default_ports_held(tmp_path):
    """A sandbox on the fixed default ports: the one already running on this machine, or one started here."""
    if taken(DEFAULT_PORTS["container"]):  # CI's quick start leaves its sandbox running
        owner = port_owner(DEFAULT_PORTS["container"])
        yield Path(owner) if owner else None
        return
    first = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--state-dir", str(tmp_path / "first")],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if (tmp_path / "first" / "ports.json").exists():
                break
            first.wait(0.05) if first.poll() is not None else __import__("time").sleep(0.05)
        yield tmp_path / "first"
    finally:
        first.terminate()
        first.wait(15)


@pytest.mark.slow
def test_a_second_sandbox_on_taken_ports_says_who_holds_them_in_one_line(tmp_path, default_ports_held):
    second = cli("serve", "--state-dir", str(tmp_path / "second"), env={"GPUPLAT_SANDBOX_PORTS": ""})
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"port {DEFAULT_PORTS['container']} (container API) is already in use" in lines[0]
    assert "GPUPLAT_SANDBOX_PORTS=auto" in lines[0]
    if default_ports_held is not None:
        assert f"by the sandbox of {default_ports_held.resolve()}" in lines[0]
        assert f"python -m sandbox stop --state-dir {default_ports_held.resolve()}" in lines[0]
    else:  # held by something that is not a sandbox
        assert "by another process" in lines[0], lines[0]
    # gpuplat's auto-start reports the same line instead of a traceback...
    with pytest.raises(SandboxStartFailed) as err:
        ensure_sandbox(tmp_path / "third", timeout=30)
    assert "the sandbox did not start: sandbox: port" in str(err.value) and "\n" not in str(err.value)
    # ...and runs on free ports when told to.
    os.environ["GPUPLAT_SANDBOX_PORTS"] = "auto"
    try:
        urls = ensure_sandbox(tmp_path / "fourth", timeout=60)
        assert urls["container"] != f"http://127.0.0.1:{DEFAULT_PORTS['container']}"
    finally:
        del os.environ["GPUPLAT_SANDBOX_PORTS"]
        assert cli("stop", "--state-dir", str(tmp_path / "fourth")).returncode == 0


@pytest.mark.slow
def test_every_verb_honours_gpuplat_sandbox_dir(sandbox_process):
    sandbox_process.start()
    env = {"GPUPLAT_SANDBOX_DIR": str(sandbox_process.state_dir)}
    calls = cli("calls", env=env)
    assert calls.returncode == 0 and "_total" in json.loads(calls.stdout)
    assert cli("advance", "5", env=env).returncode == 0
    stopped = cli("stop", env=env)
    assert stopped.returncode == 0 and "stopped pid" in stopped.stdout
    sandbox_process.proc.wait(15)


def test_stop_never_signals_a_process_that_is_not_that_sandbox(tmp_path):
    state = tmp_path / "stale"
    state.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "pid").write_text(str(bystander.pid))  # a pid file that outlived its sandbox, pid reused
        out = cli("stop", "--state-dir", str(state))
        assert out.returncode == 0 and "not this sandbox; nothing signalled" in out.stdout
        assert bystander.poll() is None
        assert not (state / "pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


# Every route of each port that parses a JSON body (Compute and the Billing Catalog parse none).
BODY_ROUTES = {"container": "/v1/projects/p/locations/us-central1-a/clusters",
               "serviceusage": "/v1/projects/p/services:batchEnable",
               "secretmanager": "/v1/projects/p/secrets?secretId=s",
               "admin": "/sandbox/faults"}


@pytest.mark.parametrize("api", sorted(BODY_ROUTES))
def test_a_deeply_nested_body_is_a_400_on_every_port(sandbox, api):
    req = urllib.request.Request(sandbox.urls()[api] + BODY_ROUTES[api], method="POST",
                                 data=b"[" * 100000 + b"]" * 100000, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400, err.value.read()


@pytest.mark.parametrize("length", [b"-5", b"12x", b""])
def test_a_malformed_content_length_is_a_400_on_a_google_port(sandbox, length):
    port = int(sandbox.urls()["container"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/projects/p/locations/l/clusters HTTP/1.1\r\nHost: x\r\nContent-Length: " + length +
                  b"\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")


def cmdline(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # the process ended while we looked
        return ""


@pytest.mark.slow
def test_one_state_directory_has_one_sandbox_however_many_processes_start_it(tmp_path):
    """Measured before: two processes that both auto-started the sandbox started two servers on one state
    directory, each with its own copy of the state, and the later save lost the other's changes."""
    state = tmp_path / "shared-state"
    code = ("import json, sys; from pathlib import Path; from resources.sandbox_runtime import ensure_sandbox; "
            "print(json.dumps(ensure_sandbox(Path(sys.argv[1]))))")
    env = {**os.environ, "GPUPLAT_SANDBOX_PORTS": "auto", "PYTHONPATH": str(ROOT)}
    starters = [subprocess.Popen([sys.executable, "-c", code, str(state)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        answers = [p.communicate(timeout=120) for p in starters]
        assert [p.returncode for p in starters] == [0, 0, 0], answers
        urls = {out.strip() for out, _ in answers}
        assert len(urls) == 1  # all three talk to one sandbox
        servers = [args for args in map(cmdline, Path("/proc").glob("[0-9]*/cmdline"))
                   if "sandbox serve" in args and str(state) in args]
        assert len(servers) == 1, servers
        second = cli("serve", "--ephemeral-ports", "--state-dir", str(state), timeout=60)
        assert second.returncode == 3
        assert second.stderr.strip().splitlines() == [
            f"sandbox: another sandbox (pid {(state / 'serve.lock').read_text().strip()}) already serves {state}; use it, "
            f"or stop it first: python -m sandbox stop --state-dir {state}"]
    finally:
        cli("stop", "--state-dir", str(state))
