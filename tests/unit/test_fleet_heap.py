"""A fleet's long-lived objects are frozen out of the collector's full collections once per process, after a
collection (so no garbage is frozen); a small fleet's process is left as Python runs it. In a subprocess:
freezing is for the whole process, and this one runs the other tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import gc, weakref
from sensors import tick

class Node:
    pass

assert not tick.freeze_long_lived(tick.FREEZE_FLEET - 1) and gc.get_freeze_count() == 0
cycle = Node(); cycle.me = cycle; dead = weakref.ref(cycle); del cycle  # garbage only a collection frees
kept = Node(); kept.me = kept
assert tick.freeze_long_lived(tick.FREEZE_FLEET)
frozen = gc.get_freeze_count()
assert dead() is None, "garbage was frozen"
assert frozen > 1000 and not any(o is kept for o in gc.get_objects())  # alive: in the permanent generation
assert not tick.freeze_long_lived(500) and gc.get_freeze_count() == frozen  # once per process
print("ok", frozen)
"""


def test_a_fleet_s_objects_are_frozen_once_without_its_garbage_and_a_small_fleet_s_never():
    done = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


EXIT_CODE = """
import atexit, gc, io, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), flush=True))  # runs after gpuplat's
from gpuplat_assets import shutdown
shutdown.freeze_at_exit()
shutdown.freeze_at_exit()  # once per process
assert gc.get_freeze_count() == 0  # nothing is frozen while the process works
log = open(sys.argv[1], "w")
log.write("written before exit")  # buffered: flushed when the file is freed at exit
print("ok", flush=True)
"""


def test_a_process_that_loaded_the_code_location_freezes_what_is_alive_only_at_exit(tmp_path):
    """Exit without a last full collection over every object alive (gpuplat_assets/shutdown.py): one
    exit handler, run after those registered later, and a file left open is still written."""
    out = tmp_path / "log.txt"
    done = subprocess.run([sys.executable, "-c", EXIT_CODE, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "ok" and lines[1].startswith("frozen at exit: ") and int(lines[1].split()[-1]) > 1000, lines
    assert out.read_text() == "written before exit"
