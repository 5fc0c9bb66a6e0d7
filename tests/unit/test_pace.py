"""How many threads a sensor's tick observes with (sensors/tick.py Pace): fewer when they only hand the GIL
to one another, more when they wait on the APIs, never outside 1..most."""

from __future__ import annotations

import threading
import time

import pytest

from sensors.tick import Pace


@pytest.mark.parametrize("start, cpu_s, counts", [
    (8, 0.95, [4, 2, 1, 1, 1]),  # threads that keep a core busy are halved, down to one
    (1, 0.2, [2, 4, 8, 8, 8]),  # threads that mostly wait are doubled, up to `most`
], ids=["busy", "waiting"])
def test_the_count_follows_how_busy_the_threads_kept_a_core(start, cpu_s, counts):
    pace = Pace(8)
    pace.workers = start
    seen = []
    for _ in counts:
        pace.learn(cpu_s=cpu_s, wall_s=1.0)
        seen.append(pace.workers)
    assert seen == counts


def test_between_busy_and_waiting_the_count_stays():
    pace = Pace(8)
    pace.workers = 2
    pace.learn(cpu_s=0.4, wall_s=1.0)
    assert pace.workers == 2 and round(pace.busy, 2) == 0.4


def test_a_tick_measures_its_threads_cpu_not_their_waiting():
    """Observations that wait (sleep) cost no CPU: the threads were waiting, so the next tick gets more."""
    pace = Pace(8)
    pace.workers = 2
    threads = set()

    def observe(name: str) -> str:
        threads.add(threading.current_thread().name)
        time.sleep(0.02)
        return name.upper()

    assert pace.map(observe, ["a", "b", "c", "d"], "test-pace") == ["A", "B", "C", "D"]
    assert len(threads) == 2 and all(t.startswith("test-pace") for t in threads)
    assert pace.busy < Pace.WAITING
    assert pace.workers == 4


def test_one_environment_teaches_nothing():
    pace = Pace(8)
    pace.workers = 2
    assert pace.map(lambda n: n, ["only"]) == ["only"]
    assert pace.workers == 2
