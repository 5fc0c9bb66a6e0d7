"""A process that loaded the code location exits without a last walk over everything it holds.

At exit Python clears every module and runs full garbage collections over all that is still alive: in a
run worker holding Dagster, the Google clients and the Kubernetes client (~3,000 modules, a million
objects) that took 0.8-0.9 s of every run, after its last step (benchmarks/noop_materialize.py). What is
alive at exit is freed by the operating system either way; `gc.freeze()` as the last exit handler moves it
out of the collector's reach, so those collections walk only what is made after it. Reference counting
still frees what it frees (files are closed, logging is flushed by its own exit handler); only objects in
reference cycles at exit are left to the operating system, as Python already allows
("It is not guaranteed that __del__() methods are called for objects that still exist when the
interpreter exits", the data model's reference).
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def freeze_at_exit() -> None:
    """Once per process. Registered when the code location loads: exit handlers run last-registered first,
    so Dagster's and the clients' own handlers, registered later, run before it."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(gc.freeze)
