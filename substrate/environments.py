"""Environments, found at run time: one folder per environment, `<root>/<name>/config.yaml`.

Nothing here runs at import. Every reader (a run, a sensor tick, the CLI) lists the folder as it is
now, so a new environment is seen without a reload, and a broken one costs only itself: its own
one-line error, never the code location or another environment. A folder whose name cannot be an
environment (a Dagster partition key), a symlink loop, a file too large or an alias bomb each get a
true line of their own.

A config is parsed again only when its file changed (path, mtime, size, inode): a sensor watching
hundreds of environments every minute re-reads what moved, nothing else.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .config import CONFIG_FILE, ENVIRONMENTS_VAR, ConfigError, EnvConfig, load_yaml, parse_config
from .parsed import ParsedFiles

# What can name an environment: it is a partition key, a label value and part of file names. Dagster
# refuses "..." in a partition key; gpuplat keeps to a portable subset.
NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
NAME_RULE = ("letters, digits, '-', '_' and '.', at most 63, starting and ending with a letter or digit, "
             "no '..'")


def environments_dir() -> Path:
    return Path(os.environ.get(ENVIRONMENTS_VAR, "environments"))


def name_problem(name: str) -> str:
    """Why `name` cannot name an environment ("" when it can)."""
    if NAME.match(name) and ".." not in name:
        return ""
    return f"{name!r} cannot name an environment (allowed: {NAME_RULE})"


# ---- one config, parsed once per version of its file ---------------------------------------------
_CONFIGS: ParsedFiles[EnvConfig] = ParsedFiles()


def load_config(path: Path) -> EnvConfig:
    """The config at `path`, parsed again only when the file changed (an `EnvConfig` is immutable)."""
    return _CONFIGS.get(path, lambda p: parse_config(p.parent.name, str(p), load_yaml(p)))


# ---- every environment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Environments:
    """Every environment folder: the valid configs and, per broken one, its one-line error. `invalid`:
    folders whose name cannot be an environment (never a partition), each with why."""

    configs: dict[str, EnvConfig]
    errors: dict[str, str]
    invalid: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The environments that are partitions: valid names, whether their config loads or not."""
        return sorted({*self.configs, *self.errors})


def _entries(root: Path) -> list[tuple[str, Path, str]]:
    """(name, config path, problem) per folder under `root`: problem "" when the folder holds a config."""
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    out = []
    for child in children:
        if child.name.startswith("."):
            continue
        cfg = child / CONFIG_FILE
        try:  # stat, not is_dir(): is_dir() answers False for a symlink loop and hides it
            if not stat.S_ISDIR(child.stat().st_mode):
                continue
            cfg.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                out.append((child.name, cfg, f"{child}: is a symbolic link loop (it points back at itself); "
                                             f"remove it or point it at an environment folder"))
            elif exc.errno == errno.ENOENT and child.is_symlink() and not child.exists():
                out.append((child.name, cfg, f"{child}: is a symbolic link to nothing ({os.readlink(child)})"))
            elif exc.errno != errno.ENOENT:
                out.append((child.name, cfg, f"{cfg}: cannot be read ({exc.strerror})"))
            continue
        out.append((child.name, cfg, ""))
    return out


def load_environments(root: Path | None = None) -> Environments:
    root = root or environments_dir()
    configs: dict[str, EnvConfig] = {}
    errors: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for name, cfg, problem in _entries(root):
        bad_name = name_problem(name)
        if bad_name:
            invalid[name] = f"{root / name}: {bad_name}; rename the folder (it is ignored until then)"
        elif problem:
            errors[name] = problem
        else:
            try:
                configs[name] = load_config(cfg)
            except ConfigError as exc:
                errors[name] = str(exc)
    return Environments(configs, errors, invalid)


def load_environment(name: str, root: Path | None = None) -> EnvConfig:
    """One environment by name, read as its file is now."""
    root = root or environments_dir()
    path = root / name / CONFIG_FILE
    bad_name = name_problem(name)
    if bad_name:
        raise ConfigError(str(root / name), "(folder)", None, NAME_RULE, problem=bad_name)
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(str(root / name), "(folder)", None, "an environment folder",
                              problem="is a symbolic link loop (it points back at itself)") from None
        found = sorted(n for n, _, problem in _entries(root) if not problem and not name_problem(n))
        raise ConfigError(str(path), "(file)", None,
                          f"one of the environments under {root.resolve()} ({ENVIRONMENTS_VAR}): "
                          f"{', '.join(found) or 'none found'}", problem=f"no environment named {name!r}") from None
    return load_config(path)
