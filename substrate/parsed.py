"""Files parsed once per version of the file: the drift sensor looks at every environment every minute,
and its config, the fork's manifests and values do not change between ticks.

A version is the file's (mtime, size, inode): an editor's save, a `git checkout`, git-sync's new
worktree each make a new one. A file that cannot be read or parsed is not remembered: its error is
raised again on the next look.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class ParsedFiles(Generic[T]):
    def __init__(self, max_entries: int = 8192):
        self._cache: dict[str, tuple[tuple[int, int, int], T]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, path: Path, parse: Callable[[Path], T]) -> T:
        try:
            st = path.stat()
        except OSError:
            return parse(path)  # its own one-line error
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        key = str(path)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = parse(path)
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = (stamp, value)
        return value
