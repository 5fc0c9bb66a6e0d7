"""How long the code location takes to import, against a bare `import dagster`: median of N fresh processes.

The Dagster webserver, daemon and every run worker import the code location; what gpuplat adds on
top of Dagster is paid each time. Target: at most 1.3x a bare `import dagster` (Google and
Kubernetes clients are imported where they are used, not at load).

    python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3


def seconds(statement: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    seconds("import gpuplat_assets.definitions")  # warm the .pyc files first
    dagster = [seconds("import dagster") for _ in range(args.runs)]
    gpuplat = [seconds("import gpuplat_assets.definitions") for _ in range(args.runs)]
    base, ours = statistics.median(dagster), statistics.median(gpuplat)
    ratio = ours / base
    print(f"import dagster                        median {base * 1000:6.0f} ms  (runs {[round(x * 1000) for x in dagster]})")
    print(f"import gpuplat_assets.definitions     median {ours * 1000:6.0f} ms  (runs {[round(x * 1000) for x in gpuplat]})")
    print(f"ratio {ratio:.2f}x (target <= {TARGET}x)  {'ok' if ratio <= TARGET else 'OVER'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
