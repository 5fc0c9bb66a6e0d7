"""One clear line for a broken environment on the command line, first and last.

`dagster asset materialize --partition <env>` and `dagster job execute --tags '{"dagster/partition":
...}'` load this code location in the CLI's own process. When the environment they name has a broken
config (or none), the run would fail inside a step and Dagster would print the message twice inside
its stack traces, which gpuplat cannot suppress; so the message is printed here, before anything
runs, and once more when the process exits, so that it is the first and the last thing the user
reads. A run worker, the daemon or the webserver never prints it: they are not these commands.
"""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path

from .config import ConfigError, load_environment

COMMANDS = (("asset", "materialize"), ("job", "execute"), ("job", "launch"))


def requested_environment(argv: list[str]) -> str | None:
    """The environment a dagster CLI invocation names, or None when it is not such an invocation."""
    if not argv or Path(argv[0]).name not in ("dagster", "__main__.py") or "api" in argv[1:3]:
        return None
    if not any(argv[i:i + 2] == list(cmd) for cmd in COMMANDS for i in range(1, 3)):
        return None
    for i, arg in enumerate(argv):
        if arg == "--partition" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--partition="):
            return arg.split("=", 1)[1]
        if arg == "--tags" and i + 1 < len(argv):
            try:
                return json.loads(argv[i + 1]).get("dagster/partition")
            except (ValueError, AttributeError):
                return None
    return None


def announce(argv: list[str] | None = None) -> str | None:
    """Print the config error of the environment the CLI was asked to run, now and at exit."""
    name = requested_environment(sys.argv if argv is None else argv)
    if not name:
        return None
    try:
        load_environment(name)
    except ConfigError as exc:
        line = f"gpuplat: {exc}"
        print(line, file=sys.stderr, flush=True)
        atexit.register(lambda: print(line, file=sys.stderr, flush=True))
        return line
    return None
