"""The image as shipped, without Docker: deploy/Dockerfile read instruction by instruction.

There is no Docker engine here, so the image-equivalent layout is built from what the Dockerfile says:
the files its default target COPYs from the build context (and nothing else), installed non-editable
into a fresh virtual environment, its ENV and WORKDIR, and a fork supplied the documented way (the
tree `--build-context fork=...` copies to /opt/gpuplat/fork). The layout then materializes a sandbox
environment of that fork against a sandbox the test runs beside it, as the demo would: the image
itself carries no sandbox. The dependencies are not downloaded again: the fresh environment reads
them from the test's own (a `.pth` line), which holds what requirements.lock pins (CI installs it
with --require-hashes and `.ci/lock --check` fails when it is stale).

The first tests read the Dockerfile against the project and the Helm values, so the layout the slow
test builds and the file can never drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SandboxProcess, shipped_environment

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
VALUES = ROOT / "deploy" / "values.yaml"
GIT_SYNC_VALUES = ROOT / "deploy" / "values-git-sync.yaml"


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.steps if ins == instruction]

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage or None, sources, destination) of each COPY."""
        out = []
        for args in self.all("COPY"):
            words = shlex.split(args)
            source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            out.append((source, paths[:-1], paths[-1]))
        return out

    def env(self) -> dict[str, str]:
        out = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                out[key] = value
        return out


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The Dockerfile's stages in order, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: dict[str, Stage] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            current = Stage(m.group(2) or str(len(out)), m.group(1))
            out[current.name] = current
        else:
            current.steps.append((instruction, args.strip()))
    return out


def lineage(all_stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [all_stages[name]]
    while chain[0].base in all_stages:
        chain.insert(0, all_stages[chain[0].base])
    return chain


def packages() -> list[str]:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.rstrip("*") for p in found]


def default_target() -> list[Stage]:
    all_stages = stages()
    return lineage(all_stages, list(all_stages)[-1])


def context_copies(chain: list[Stage]) -> list[tuple[list[str], str]]:
    """(sources in the build context, destination in the image) of every COPY of `chain`, following a
    `COPY --from=<stage>` of a stage of the file into what that stage copied from the context."""
    all_stages = stages()
    out = []
    for stage in chain:
        for frm, sources, dest in stage.copies():
            if frm is None:
                out.append((sources, dest))
            elif frm in all_stages and frm != "fork":
                (inner,) = sources  # one folder of that stage, put at `dest`
                for names, there in context_copies([all_stages[frm]]):
                    assert there.startswith(inner), (frm, there)
                    out.append((names, dest + there[len(inner):]))
    return out


# ---- the Dockerfile against the project and the values -------------------------------------------

def test_the_image_installs_the_lock_with_hashes_and_every_package_but_the_sandbox():
    chain = default_target()
    runs = " && ".join(args for stage in chain for args in stage.all("RUN"))
    assert "pip install --no-deps --require-hashes -r /tmp/src/requirements.lock" in runs
    assert "pip install --no-deps /tmp/src" in runs
    copied = {src for sources, _ in context_copies(chain) for src in sources}
    assert "requirements.lock" in copied and "pyproject.toml" in copied
    for package in packages():
        if package == "sandbox":
            assert package not in copied, "the image must not carry the sandbox (only --target demo does)"
        else:
            assert package in copied, f"deploy/Dockerfile's image does not copy {package} (pyproject.toml installs it)"
    # Nothing that is not code: no environments of this repository, no sandbox configs, no example tree.
    assert not copied & {"environments", "example-platform", "sandbox"}, copied


def test_the_demo_target_carries_the_sandbox_and_its_environments():
    copied = {src for sources, _ in context_copies([stages()["demo"]]) for src in sources}
    assert {"sandbox", "environments", "example-platform"} <= copied
    assert set(packages()) <= copied


def test_the_fork_stage_is_empty_unless_a_build_context_replaces_it_and_lands_where_gpuplat_reads():
    all_stages = stages()
    assert all_stages["fork"].base == "scratch" and not all_stages["fork"].steps
    chain = default_target()
    env = {k: v for stage in chain for k, v in stage.env().items()}
    fork_copies = [dest for stage in chain for frm, _, dest in stage.copies() if frm == "fork"]
    assert fork_copies == ["/opt/gpuplat/fork/"]
    assert env["GPUPLAT_ENVIRONMENTS"] == "/opt/gpuplat/fork/environments"


def test_the_helm_values_run_the_image_s_command_with_its_fork_path_and_git_sync_repeats_only_that():
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    chain = default_target()
    env = {k: v for stage in chain for k, v in stage.env().items()}
    assert {e["name"]: e["value"] for e in deployment["env"]} == {"GPUPLAT_ENVIRONMENTS": env["GPUPLAT_ENVIRONMENTS"]}
    cmd = json.loads(next(args for stage in chain for args in stage.all("CMD")))
    assert cmd == ["dagster", "api", "grpc", *deployment["dagsterApiGrpcArgs"], "-h", "0.0.0.0",
                   "-p", str(deployment["port"])]

    git_sync = yaml.safe_load(GIT_SYNC_VALUES.read_text())
    (fetched,) = git_sync["dagster-user-deployments"]["deployments"]
    added = ("env", "initContainers", "volumes", "volumeMounts")
    assert {k: v for k, v in fetched.items() if k not in added} == {k: v for k, v in deployment.items() if k not in added}
    (init,) = fetched["initContainers"]
    (mount,) = fetched["volumeMounts"]
    root = next(a.split("=", 1)[1] for a in init["args"] if a.startswith("--root="))
    link = next(a.split("=", 1)[1] for a in init["args"] if a.startswith("--link="))
    assert "--one-time" in init["args"] and any(a.startswith("--ref=") for a in init["args"])
    assert init["volumeMounts"][0]["mountPath"] == mount["mountPath"] == root
    assert fetched["env"] == [{"name": "GPUPLAT_ENVIRONMENTS", "value": f"{root}/{link}/environments"}]
    # Run pods fetch the same revision: the chart passes a deployment's initContainers, volumes and mounts to
    # its runs (includeConfigInLaunchedRuns), so the launcher must not add a second `fetch-fork`.
    assert fetched["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert "runLauncher" not in git_sync


def test_the_webserver_and_the_daemon_run_gpuplat_s_image_which_carries_git():
    """Both construct the instance's run launcher, gpuplat's; git records the fork's commit."""
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"] == deployment["image"], part
    runs = " && ".join(args for stage in default_target() for args in stage.all("RUN"))
    assert "apt-get install -y --no-install-recommends git" in runs and "safe.directory" in runs


# ---- the layout, materializing ----------------------------------------------------------------------

def _layout(tmp: Path) -> tuple[Path, dict[str, str], Path]:
    """The default target as files: a fresh venv with only the copied sources installed non-editable, the
    Dockerfile's ENV (its /opt/gpuplat under `tmp`), its WORKDIR. Returns (python, env, workdir)."""
    chain = default_target()
    prefix = tmp / "image"

    def at(path: str) -> Path:
        return prefix / path.lstrip("/")

    src = at("/tmp/src")
    for sources, dest in context_copies(chain):
        for name in sources:
            target = at(dest) / name if dest.endswith("/") else at(dest)
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "locked-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Non-editable, from the copied sources only (as `pip install --no-deps /tmp/src`).
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                           str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUPLAT_", "DAGSTER_", "PYTHON", "KUBECONFIG"))}
    for stage in chain:
        for key, value in stage.env().items():
            env[key] = str(at(value)) if value.startswith("/opt/gpuplat") else value
    workdir = at(next(args for stage in chain for args in stage.all("WORKDIR")))
    for stage in chain:
        for args in stage.all("RUN"):
            for made in re.findall(r"/opt/gpuplat/\S+", args):
                at(made).mkdir(parents=True, exist_ok=True)
    return venv / "bin" / "python", env, workdir


@pytest.mark.slow
def test_the_image_layout_materializes_a_sandbox_environment_from_a_baked_in_fork(tmp_path):
    python, env, workdir = _layout(tmp_path)
    # What the image holds and what it does not.
    probe = subprocess.run([str(python), "-c", "import importlib.util, gpuplat_assets; "
                            "print(gpuplat_assets.__file__); print(importlib.util.find_spec('sandbox'))"],
                           cwd=workdir, env=env, capture_output=True, text=True)
    installed, sandbox_spec = probe.stdout.split()
    assert "site-packages" in installed and not installed.startswith(str(ROOT)), installed
    assert sandbox_spec == "None"

    # The fork, baked in: a checkout with environments/ and the platform tree, at /opt/gpuplat/fork.
    fork = Path(env["GPUPLAT_ENVIRONMENTS"]).parent
    shipped_environment("sandbox", fork / "environments")
    git = ["git", "-C", str(fork), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fork"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    home = tmp_path / "dagster_home"
    home.mkdir()
    materialize = [str(python), "-m", "dagster", "asset", "materialize", "-m", "gpuplat_assets.definitions",
                   "--select", "*", "--partition", "sandbox"]
    # No sandbox answers: the image never starts one, and says so in one line.
    nowhere = subprocess.run(materialize, cwd=workdir, capture_output=True, text=True, timeout=300,
                             env={**env, "DAGSTER_HOME": str(home), "GPUPLAT_SANDBOX_DIR": str(tmp_path / "none")})
    assert nowhere.returncode != 0
    last = nowhere.stderr.splitlines()[-1]
    assert last.startswith("gpuplat: ") and "the sandbox did not start: this installation carries no sandbox" in last

    sandbox = SandboxProcess(tmp_path / "sandbox")
    sandbox.start()
    try:
        done = subprocess.run(materialize, cwd=workdir, capture_output=True, text=True, timeout=600,
                              env={**env, "DAGSTER_HOME": str(home), "GPUPLAT_SANDBOX_DIR": str(sandbox.state_dir)})
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert "RUN_SUCCESS" in done.stdout + done.stderr
    finally:
        sandbox.stop()
    from dagster import AssetKey, DagsterInstance
    with DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("platform_installed"))
    metadata = event.asset_materialization.metadata
    assert metadata["platform_repo"].value == str(fork)
    assert metadata["platform_commit"].value == head[:12]
    # The kubeconfig went to the image's writable working directory, nowhere else.
    assert list((workdir / ".gpuplat" / "kube").iterdir())


def _merged(base: dict, overlay: dict) -> dict:
    """Helm's merge of two values files: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("files", [[VALUES], [VALUES, GIT_SYNC_VALUES]], ids=["baked", "git-sync"])
def test_the_run_launcher_config_in_the_values_is_one_the_launcher_accepts(files):
    from dagster._config import process_config, resolve_to_config_type

    from gpuplat_deploy.launcher import ZonedK8sRunLauncher

    values: dict = {}
    for f in files:
        values = _merged(values, yaml.safe_load(f.read_text()))
    config = values["runLauncher"]["config"]["customRunLauncher"]["config"]
    checked = process_config(resolve_to_config_type(ZonedK8sRunLauncher.config_type()), config)
    assert checked.success, checked.errors
