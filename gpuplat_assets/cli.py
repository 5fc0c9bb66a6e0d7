"""The command line's last word on a partition that is no environment.

`dagster asset materialize --partition <name>` (and `dg launch`) checks the partition against the
instance right after loading the code location, before anything of gpuplat runs, and dies with
Dagster's traceback when it is no environment. In a command-line process the code location leaves
an exception hook that says it in one line: which name, which environments exist, and why a folder
is not one (its name, a symlink loop, DAGSTER_HOME unset).
"""

from __future__ import annotations

import os
import re
import sys

from substrate.environments import environments_dir, load_environments
from substrate.failures import command_line_process

_KEY = re.compile(r"partition key `([^`]*)`")


def unknown_environment_line(exc: BaseException) -> str | None:
    from dagster._core.errors import DagsterInvalidSubsetError, DagsterUnknownPartitionError

    if not isinstance(exc, (DagsterInvalidSubsetError, DagsterUnknownPartitionError)):
        return None
    match = _KEY.search(str(exc))
    name = match.group(1) if match else ""
    root = environments_dir()
    found = load_environments(root)
    if name in found.invalid:
        return found.invalid[name]
    if not os.environ.get("DAGSTER_HOME"):
        return (f"environment {name!r} is not a partition of this instance: DAGSTER_HOME is not set, so Dagster uses "
                f"a throwaway instance that knows no environment; set DAGSTER_HOME (the README's commands do)")
    if name in found.names:
        return (f"environment {name!r} ({root.resolve() / name}) is not yet a partition of this instance: adding it "
                f"when the code loaded failed (the warning above says why); run the command again, or let the "
                f"environments sensor add it within a tick")
    known = ", ".join(found.names) or "none"
    return (f"no environment named {name!r}; allowed: one of the environments under {root.resolve()} "
            f"(GPUPLAT_ENVIRONMENTS): {known}")


def install_excepthook() -> None:
    if not command_line_process():
        return
    previous = sys.excepthook

    def hook(kind, exc, tb):
        line = unknown_environment_line(exc)
        if line is None:
            return previous(kind, exc, tb)
        print(f"gpuplat: {line}", file=sys.stderr, flush=True)

    sys.excepthook = hook
