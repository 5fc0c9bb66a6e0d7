"""Mutation score of the code that decides what gpuplat changes in a user's cloud.

The `desired_*` and `plan_*` functions and the owned-field normalization (`owned()`) of every asset
module and of the pause, plus the plan records (`substrate/plan.py`): a mistake there is a wrong
create, update or delete. mutmut (from PyPI) mutates each of them and runs the fast unit tier that
covers the mutated function (`tests/unit`, chosen by mutmut's own per-function test statistics);
a mutant no test kills survived.

mutmut works in a copy of the tree under `mutants/` (its configuration is `[tool.mutmut]` in
pyproject.toml). This script runs it, reads each mutant's result, and prints the survivors by function
and, as its last line:

    mutation score: KILLED/TOTAL killed (P%)

Timeouts and segfaults count as killed (the mutant did not pass); mutants no test reaches, and
suspicious ones, count as survivors (nothing would notice them).

    pip install mutmut==3.8.1; python benchmarks/mutation_score.py [--max-children 2] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Module-level functions and methods mutmut names `<module>.x_<function>__mutmut_<n>` and
# `<module>.xǁ<Class>ǁ<method>__mutmut_<n>`.
PATTERNS = ("substrate.*.x_desired_*", "substrate.*.x_plan_*", "substrate.*ǁowned__mutmut_*",
            "substrate.plan.x_canonical__mutmut_*", "substrate.plan.x_fingerprint__mutmut_*",
            "substrate.plan.xǁActionǁ*")
KILLED = {"killed", "timeout", "segfault"}
_NAME = re.compile(r"^(?P<function>.+)__mutmut_(?P<n>\d+)$")


def _environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The fork tests find the seed platform beside the checkout; from mutants/ they would not, and skip.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.conftest import DEFAULT_FORK, FORK_VAR
    if FORK_VAR not in env and DEFAULT_FORK.is_dir():
        env[FORK_VAR] = str(DEFAULT_FORK)
    return env


ENV = _environment()


def mutmut(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, text=True, capture_output=True,
                          check=check, env=ENV)


def results() -> dict[str, str]:
    """Mutant name -> status, from `mutmut results --all true`."""
    out = mutmut("results", "--all", "true").stdout
    status = {}
    for line in out.splitlines():
        name, _, state = line.strip().rpartition(": ")
        if name and _NAME.match(name):
            status[name] = state.strip()
    return status


def wanted(name: str) -> bool:
    from fnmatch import fnmatchcase
    return any(fnmatchcase(name, p) for p in PATTERNS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep mutants/ from an earlier run (resume)")
    args = parser.parse_args()
    if importlib.util.find_spec("mutmut") is None:
        print("mutmut is not installed here: .venv/bin/pip install mutmut==3.8.1")
        return 2
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    run = mutmut("run", "--max-children", str(args.max_children), *PATTERNS, check=False)
    took = time.monotonic() - started
    if run.returncode not in (0, 1):
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        print(f"mutmut run failed with exit code {run.returncode}")
        return 2
    status = {name: state for name, state in results().items() if wanted(name)}
    if not status:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        print("mutation score: no mutant was generated for the selected functions")
        return 2
    by_state = Counter(status.values())
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, state in sorted(status.items()):
        if state not in KILLED:
            m = _NAME.match(name)
            survivors[m.group("function")].append(f"{m.group('n')} ({state})")
    print(f"mutmut run: {took:.0f} s, {len(status)} mutants in {len({_NAME.match(n).group('function') for n in status})} "
          f"functions; states: {json.dumps(dict(by_state), sort_keys=True)}")
    if survivors:
        print("surviving mutants (see one with: python -m mutmut show <function>__mutmut_<n>):")
        for function, which in sorted(survivors.items()):
            print(f"  {function}: {', '.join(which)}")
    killed = sum(1 for s in status.values() if s in KILLED)
    print(f"mutation score: {killed}/{len(status)} killed ({100.0 * killed / len(status):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
