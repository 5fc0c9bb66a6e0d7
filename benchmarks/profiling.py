"""Where the sampling profiler is: py-spy from this virtual environment (the `bench` extra) is found
without activating it, else whatever `py-spy` the PATH has."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PY_SPY = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "py-spy"
