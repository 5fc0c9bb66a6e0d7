"""How a known failure ends a step: one line, the same in the UI, the run log and the terminal.

A `GpuplatError` (or a plan that needs a person) fails its step with a `dagster.Failure` whose
description is gpuplat's one line (also in its metadata, `gpuplat_error`). In a command-line process
(`dagster asset materialize`, `dagster job execute`, `dg launch`, which all run in process) the line
is also printed to stderr as the failure happens, ahead of the stack trace Dagster's console prints
for every failed step (its console logger is not the code location's to change for the CLI's
implicit job), and once more as the process's very last line, after Dagster's "Materialization failed".
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

from dagster import Failure

MARKER = "gpuplat_error"
_repeated: set[str] = set()


def command_line_process() -> bool:
    """A `dagster`/`dg` command run by a person (`python -m dagster` too), not a run worker or a code server
    (`dagster api ...`)."""
    argv = sys.argv or [""]
    program = Path(argv[0])
    by_module = program.name == "__main__.py" and program.parent.name in ("dagster", "dagster_dg_cli")
    return (program.name in ("dagster", "dg") or by_module) and "api" not in argv[1:2]


def failure(line: str, metadata: dict | None = None) -> Failure:
    if command_line_process() and line not in _repeated:
        _repeated.add(line)
        print(f"gpuplat: {line}", file=sys.stderr, flush=True)
        atexit.register(lambda: print(f"gpuplat: {line}", file=sys.stderr, flush=True))
    return Failure(description=line, metadata={MARKER: line, **(metadata or {})}, allow_retries=False)
