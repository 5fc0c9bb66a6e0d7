"""Find the local sandbox, starting it on demand (the embedded default for a new user).

One sandbox per project directory: its state and port file live under `.gpuplat/sandbox/`, so the
Dagster webserver, daemon and run workers all talk to the same fake cloud. `GPUPLAT_SANDBOX_DIR`
points elsewhere (tests start their own on free ports).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import SandboxStartFailed

SANDBOX_DIR_VAR = "GPUPLAT_SANDBOX_DIR"
DEFAULT_DIR = ".gpuplat/sandbox"
ERR_SANDBOX_START = "the sandbox did not start"


def sandbox_dir() -> Path:
    return Path(os.environ.get(SANDBOX_DIR_VAR, DEFAULT_DIR)).resolve()


def _alive(urls: dict) -> bool:
    try:
        import urllib.request  # lazily: http.client costs every process that loads the code location
        with urllib.request.urlopen(urls["admin"] + "/sandbox/clock", timeout=2) as resp:
            return resp.status == 200
    except (OSError, KeyError):
        return False


def ensure_sandbox(state_dir: Path | None = None, timeout: float = 60.0) -> dict[str, str]:
    """The running sandbox's base URLs, starting `python -m sandbox serve` detached if none answers.

    Processes that find none at the same moment (a run worker and the daemon, two command-line runs)
    take turns on `start.lock`: the first starts it, the others find it answering. The sandbox itself
    refuses a second server on one state directory (sandbox/core.py StateStore)."""
    state_dir = state_dir or sandbox_dir()
    port_file = state_dir / "ports.json"
    urls = _answering(port_file)
    if urls:
        return urls
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "start.lock", "a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # released when the file closes, on every path
        return _answering(port_file) or _start(state_dir, port_file, timeout)


def _answering(port_file: Path) -> dict[str, str] | None:
    if port_file.exists():
        try:
            urls = json.loads(port_file.read_text())
        except ValueError:  # being written
            return None
        if _alive(urls):
            return urls
    return None


def _start(state_dir: Path, port_file: Path, timeout: float) -> dict[str, str]:
    import importlib.util
    if importlib.util.find_spec("sandbox") is None:  # deploy/Dockerfile's image: a real cloud only
        raise SandboxStartFailed(f"{ERR_SANDBOX_START}: this installation carries no sandbox (gpuplat's image "
                                 f"leaves it out) and none answers at {state_dir}",
                                 "set substrate.sandbox: false for a real cloud, or build the demo image "
                                 "(docker build --target demo) to try gpuplat without one")
    port_file.unlink(missing_ok=True)
    log_path = state_dir / "sandbox.log"
    log = open(log_path, "ab")
    before = log.tell()
    # A new session: the sandbox outlives the run that started it and serves the next ones.
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--state-dir", str(state_dir),
                             "--port-file", str(port_file)],
                            cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        urls = _answering(port_file)
        if urls:
            log.close()
            return urls
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log.close()
    written = log_path.read_bytes()[before:].decode(errors="replace").strip().splitlines()
    reason = written[-1] if written else f"exit code {proc.poll()}"
    raise SandboxStartFailed(f"{ERR_SANDBOX_START}: {reason} (log: {log_path})",
                             "`python -m sandbox stop` stops a sandbox left running")


def sandbox_kubeconfig(urls: dict[str, str], cluster: str, out: Path) -> Path:
    """Ask the sandbox for a kubeconfig of one of its clusters and write it to `out` (mode 600)."""
    import urllib.request
    from urllib.parse import quote
    from .kube import write_private

    with urllib.request.urlopen(f"{urls['admin']}/sandbox/kubeconfig?cluster={quote(cluster, safe='')}",
                                timeout=10) as resp:
        text = resp.read().decode()
    return write_private(out, text)


def sandbox_serve_git(urls: dict[str, str], repo_url: str, checkout: Path) -> None:
    """Have the sandbox's simulated git server serve `repo_url` from the local `checkout` (the
    sandbox has no network: this is how its Argo CD reads the platform fork)."""
    import urllib.request
    req = urllib.request.Request(f"{urls['admin']}/sandbox/git", method="PUT",
                                 data=json.dumps({"repoURL": repo_url, "path": str(checkout)}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def sandbox_now(urls: dict[str, str]) -> float:
    """The sandbox's simulated clock (its clusters' timestamps are in it)."""
    import urllib.request
    with urllib.request.urlopen(f"{urls['admin']}/sandbox/clock", timeout=10) as resp:
        return float(json.loads(resp.read())["now"])
