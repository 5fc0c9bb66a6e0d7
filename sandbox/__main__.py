"""Command line of the sandbox: serve, kubeconfig, stop, and the admin verbs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_STATE_DIR = ".gpuplat/sandbox"
# The same variables gpuplat's auto-start reads: every verb finds the sandbox gpuplat would use.
SANDBOX_DIR_VAR = "GPUPLAT_SANDBOX_DIR"
SANDBOX_PORTS_VAR = "GPUPLAT_SANDBOX_PORTS"


def _port_file(state_dir: str, port_file: str | None) -> Path:
    return Path(port_file) if port_file else Path(state_dir) / "ports.json"


def _admin_url(args) -> str:
    path = _port_file(args.state_dir, getattr(args, "port_file", None))
    if not path.exists():
        sys.exit(f"sandbox: no port file at {path}: is the sandbox running? "
                 f"(start it with: python -m sandbox serve --state-dir {args.state_dir})")
    return json.loads(path.read_text())["admin"]


def _admin(args, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(_admin_url(args) + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        sys.exit(f"sandbox: {method} {path} failed: {err.code} {err.read().decode(errors='replace')}")
    except urllib.error.URLError as err:
        sys.exit(f"sandbox: cannot reach the admin API at {_admin_url(args)}: {err.reason}")
    ctype = resp.headers.get("Content-Type", "")
    return json.loads(raw) if "json" in ctype else raw.decode()


def cmd_serve(args) -> int:
    from .app import EPHEMERAL_PORTS, Sandbox, port_owner
    from .core import StateDirInUse
    from .gc_clock import process_clock
    from .wire.http import PortInUse

    process_clock()

    ports = None
    if args.ephemeral_ports or os.environ.get(SANDBOX_PORTS_VAR) == "auto":
        ports = EPHEMERAL_PORTS
    try:
        sb = Sandbox(args.state_dir, ports=ports)
    except StateDirInUse as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return 3
    except PortInUse as exc:
        owner = port_owner(exc.port)
        held = f"by the sandbox of {owner} (stop it: python -m sandbox stop --state-dir {owner})" if owner else \
            "by another process"
        print(f"sandbox: port {exc.port} ({exc.api} API) is already in use {held}; or run this one on free ports: "
              f"{SANDBOX_PORTS_VAR}=auto", file=sys.stderr, flush=True)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sb.stopped.set())
    sb.start(_port_file(args.state_dir, args.port_file))
    print(json.dumps(sb.urls()), flush=True)
    try:
        while not sb.stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    sb.stop()
    return 0


def cmd_kubeconfig(args) -> int:
    from urllib.parse import quote

    text = _admin(args, "GET", f"/sandbox/kubeconfig?cluster={quote(args.cluster, safe='')}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    os.chmod(out, 0o600)
    print(f"wrote {out}")
    return 0


def is_sandbox_process(pid: int, state_dir: str) -> bool:
    """Whether `pid` is `python -m sandbox serve` for this state dir (a pid file can outlive its process,
    and the pid be reused by anything)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv]
    if "sandbox" not in args or "serve" not in args or "--state-dir" not in args:
        return False
    given = args[args.index("--state-dir") + 1] if args.index("--state-dir") + 1 < len(args) else ""
    try:
        cwd = Path(f"/proc/{pid}/cwd").resolve()
    except OSError:
        return False
    return (cwd / given).resolve() == Path(state_dir).resolve()


def cmd_stop(args) -> int:
    pid_file = Path(args.state_dir) / "pid"
    if not pid_file.exists():
        print("sandbox: not running")
        return 0
    pid = int(pid_file.read_text())
    if not is_sandbox_process(pid, args.state_dir):
        print(f"sandbox: not running (pid {pid} in {pid_file} is not this sandbox; nothing signalled)")
        pid_file.unlink(missing_ok=True)
        _port_file(args.state_dir, None).unlink(missing_ok=True)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("sandbox: not running")
        pid_file.unlink(missing_ok=True)
        return 0
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    _port_file(args.state_dir, None).unlink(missing_ok=True)
    print(f"sandbox: stopped pid {pid}")
    return 0


def cmd_admin(args) -> int:
    body = json.loads(args.body) if args.body else None
    result = _admin(args, args.method.upper(), args.path, body)
    print(json.dumps(result, indent=2) if not isinstance(result, str) else result)
    return 0


def cmd_calls(args) -> int:
    print(json.dumps(_admin(args, "GET", "/sandbox/calls"), indent=2))
    return 0


def cmd_fault(args) -> int:
    rule = {"api": args.api, "method": args.method, "kind": args.kind, "count": args.count}
    print(json.dumps(_admin(args, "POST", "/sandbox/faults", rule)))
    return 0


def cmd_advance(args) -> int:
    print(json.dumps(_admin(args, "POST", "/sandbox/clock/advance", {"seconds": args.seconds})))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    from .core import FAULT_KINDS

    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, port_file=True):
        sp.add_argument("--state-dir", default=os.environ.get(SANDBOX_DIR_VAR) or DEFAULT_STATE_DIR,
                        help=f"default: ${SANDBOX_DIR_VAR} or {DEFAULT_STATE_DIR}")
        if port_file:
            sp.add_argument("--port-file", default=None, help="default: STATE_DIR/ports.json")

    s = sub.add_parser("serve", help="run the fake cloud in the foreground")
    common(s)
    s.add_argument("--ephemeral-ports", action="store_true",
                   help=f"let the OS pick free ports (also {SANDBOX_PORTS_VAR}=auto)")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("kubeconfig", help="write a kubeconfig for one sandbox cluster")
    common(s)
    s.add_argument("--cluster", required=True, help="projects/P/locations/L/clusters/C or a pre-provisioned name")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_kubeconfig)

    s = sub.add_parser("stop", help="stop the sandbox serving STATE_DIR")
    common(s, port_file=False)
    s.set_defaults(fn=cmd_stop)

    s = sub.add_parser("calls", help="print the call counters")
    common(s)
    s.set_defaults(fn=cmd_calls)

    s = sub.add_parser("fault", help="make the next COUNT calls of API/METHOD fail")
    common(s)
    s.add_argument("api")
    s.add_argument("method", help="API method name, glob allowed (CreateNodePool, list:pods, *)")
    s.add_argument("kind", choices=list(FAULT_KINDS))
    s.add_argument("--count", type=int, default=1)
    s.set_defaults(fn=cmd_fault)

    s = sub.add_parser("advance", help="advance the simulated clock")
    common(s)
    s.add_argument("seconds", type=float)
    s.set_defaults(fn=cmd_advance)

    s = sub.add_parser("admin", help="call any admin endpoint: METHOD PATH [JSON]")
    common(s)
    s.add_argument("method")
    s.add_argument("path")
    s.add_argument("body", nargs="?")
    s.set_defaults(fn=cmd_admin)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
