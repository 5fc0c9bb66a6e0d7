"""The lock files hold what pyproject.toml pins, with hashes; the image installs one, CI and the quick start
the other. `.ci/lock --check` (CI) re-resolves them with uv; this is the offline half of that check."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import ROOT

PINS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path) -> dict[str, str]:
    text = (ROOT / path).read_text()
    # `name==version[ ; marker] \` then its `--hash=sha256:...` lines
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)(?: ;[^\\\n]*)? \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
                         text, re.M)
    assert entries, f"{path} holds no `name==version` entries with hashes"
    names = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)
    assert len(entries) == len(names), f"{path}: every entry has its hashes"
    return {_normal(n): v for n, v, _ in entries}


def pins(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", spec)
        assert m, f"pyproject.toml: {spec!r} is not pinned with =="
        out[_normal(m.group(1))] = m.group(2)
    return out


@pytest.mark.parametrize("lock, specs", [
    ("requirements.lock", PINS["dependencies"]),
    ("requirements-test.lock", PINS["dependencies"] + PINS["optional-dependencies"]["test"]),
], ids=["runtime", "test"])
def test_every_pin_of_pyproject_is_in_the_lock_at_its_version(lock, specs):
    have = locked(lock)
    for name, version in pins(specs).items():
        assert have.get(name) == version, f"{lock} has {name} {have.get(name)}, pyproject.toml pins {version}: run .ci/lock"


def test_the_runtime_lock_carries_no_test_tool_and_the_test_lock_carries_the_runtime():
    runtime, test = locked("requirements.lock"), locked("requirements-test.lock")
    assert not set(pins(PINS["optional-dependencies"]["test"])) & set(runtime)
    assert {n: v for n, v in test.items() if n in runtime} == runtime


def test_the_quick_start_and_the_image_install_from_the_locks_with_hashes():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -q --no-deps --require-hashes -r requirements-test.lock" in readme
    assert "--require-hashes -r /tmp/src/requirements.lock" in (ROOT / "deploy" / "Dockerfile").read_text()
    assert "UV=.venv/bin/uv .ci/lock --check" in (ROOT / ".ci" / "run").read_text()
