"""The Dagster UI end to end: `dagster dev` over this code location, driven by a real Chromium.

The test starts its own sandbox (free ports) and `dagster dev` (webserver + daemon) with a
temporary DAGSTER_HOME (the repo's dagster.yaml with its storage moved into the temporary folder)
and a temporary environments folder holding a copy of environments/sandbox. Debian's Chromium,
driven headless by Playwright, then:

1. opens the global asset lineage (/asset-groups), expands every group (graph settings menu,
   "Expand all groups") and finds a node for each of the eight assets; the full-page screenshot
   goes to test-artifacts/lineage.png and docs/lineage.png;
2. opens apis_enabled's asset page, Materialize… -> partition `sandbox` -> "Launch 1 run", follows
   the toast's View link to the run page and waits until it shows Success;
3. confirms the run through the GraphQL API and the instance's own storage.

Screenshots of every step land in test-artifacts/. Skipped only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from substrate.pieces import PIECES
from tests.conftest import SandboxProcess, free_port, shipped_environment

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
DOCS_LINEAGE = ROOT / "docs" / "lineage.png"
BIN = Path(sys.executable).parent
ASSETS = tuple(piece.name for piece in PIECES)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
RUN_TIMEOUT_S = 120
UUID_RE = re.compile(r"/runs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    f"{CHROMIUM} is absent: the browser test drives Debian's Chromium (apt-get install chromium; .ci/run does)"))


def _default_sigint():
    # A shell that starts pytest in the background leaves SIGINT ignored, and Dagster maps SIGTERM to
    # whatever SIGINT does: without this, dagster dev / dagster-daemon would ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---- processes -----------------------------------------------------------------------------------

class DagsterDev:
    """`dagster dev` (webserver, daemon, code server, run workers) in its own process group."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        dagster = BIN / "dagster"
        cmd = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
               "-p", str(self.port)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_sigint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"dagster dev did not serve /server_info within {timeout:.0f} s:\n"
                           f"{self.log.read_text()[-4000:]}")

    def graphql(self, query: str, variables: dict) -> dict:
        req = urllib.request.Request(self.url + "/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
        assert not body.get("errors"), body
        return body["data"]

    def stop(self) -> None:
        if not self.proc:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            # The parent shuts its webserver and daemon down through their shutdown pipes.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (code servers, run workers, a stuck parent) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


# ---- fixtures ------------------------------------------------------------------------------------

def _relocate(node, home: Path):
    """Every relative base_dir of the repo's dagster.yaml, moved under the temporary DAGSTER_HOME."""
    if isinstance(node, dict):
        return {k: (str(home / v) if k == "base_dir" and isinstance(v, str) and not os.path.isabs(v)
                    else _relocate(v, home)) for k, v in node.items()}
    if isinstance(node, list):
        return [_relocate(v, home) for v in node]
    return node


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    home = work / "dagster_home"
    home.mkdir()
    config = _relocate(yaml.safe_load((ROOT / "dagster.yaml").read_text()), home / "storage")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    envs = work / "environments"
    shipped_environment("sandbox", envs)
    sandbox = SandboxProcess(work / "sandbox")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "GPUPLAT_"))}
    env.update(DAGSTER_HOME=str(home), GPUPLAT_SANDBOX_DIR=str(sandbox.state_dir), GPUPLAT_ENVIRONMENTS=str(envs),
               PYTHONUNBUFFERED="1")
    ARTIFACTS.mkdir(exist_ok=True)
    dev = DagsterDev(env, ARTIFACTS / "dagster-dev.log")
    try:
        sandbox.start()
        dev.start()
        yield dev, home
    finally:
        dev.stop()
        sandbox.stop()


@pytest.fixture
def page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1920, "height": 1200})
            # The first visit shows a "Join the Dagster community" dialog over everything; this is the
            # flag the UI stores once it was skipped (dismiss_community_dialog is the fallback).
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            yield pg
        finally:
            browser.close()


def dismiss_community_dialog(page) -> None:
    skip = page.get_by_role("button", name="Skip", exact=True)
    if skip.count() and skip.first.is_visible():
        skip.first.click()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# ---- the test ------------------------------------------------------------------------------------

def test_lineage_and_materialize_from_the_ui(stack, page):
    dev, home = stack
    from playwright.sync_api import expect

    step = "lineage"
    try:
        # 1. The global asset lineage, every group expanded, one node per asset.
        page.goto(dev.url + "/asset-groups")
        dismiss_community_dialog(page)
        expect(page.get_by_role("button", name="Materialize all…")).to_be_visible(timeout=60_000)
        page.locator("button:has([aria-label='settings'])").last.click()  # the graph's settings menu
        page.get_by_role("menuitem").filter(has_text="Expand all groups").click()
        page.keyboard.press("Escape")
        # The expanded groups live in the URL (?expanded=...): reloading it lays the graph out expanded
        # and zooms it to fit, so the screenshot shows every node in full.
        expect(page).to_have_url(re.compile(r"expanded="))
        page.goto(page.url)
        graph = page.locator("foreignObject")
        for name in ASSETS:
            expect(graph.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)  # let the zoom-to-fit animation settle
        lineage = shot(page, "lineage.png")
        DOCS_LINEAGE.parent.mkdir(exist_ok=True)
        shutil.copyfile(lineage, DOCS_LINEAGE)

        # 2. apis_enabled -> Materialize… -> partition sandbox -> launch.
        step = "asset-page"
        page.goto(dev.url + "/assets/apis_enabled")
        dismiss_community_dialog(page)
        materialize = page.get_by_role("button", name="Materialize…")
        expect(materialize).to_be_enabled(timeout=60_000)
        shot(page, "02-asset-page.png")
        step = "materialize-dialog"
        materialize.click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize apis_enabled")).to_be_visible()
        shot(page, "03-materialize-dialog.png")
        step = "pick-partition"
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_role("menuitem").filter(has_text="sandbox").click()
        dialog.get_by_text("Launch runs to materialize apis_enabled").click()  # closes the partition list
        expect(page.get_by_role("menuitem").filter(has_text="sandbox")).to_be_hidden()
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled()
        shot(page, "04-partition-selected.png")
        step = "launch"
        launch.click()
        view = page.get_by_role("link", name="View", exact=True)
        expect(view).to_be_visible()
        shot(page, "05-launched.png")
        view.click()
        expect(page).to_have_url(UUID_RE)
        run_id = UUID_RE.search(page.url).group(1)

        # 3. The run page shows Success (bounded), with the partition tag.
        step = "run-page"
        expect(page.get_by_text("partition: sandbox", exact=True).first).to_be_visible(timeout=60_000)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            for candidate in ("Success", "Failure", "Canceled"):
                if page.get_by_text(candidate, exact=True).count():
                    status = candidate
            if status:
                break
            page.wait_for_timeout(1000)
        shot(page, "06-run-page.png")
        assert status == "Success", f"run {run_id} shows {status or 'no final status'} after {RUN_TIMEOUT_S} s"
        expect(page.locator("[aria-label='run_success']").first).to_be_visible()

        step = "lineage-after"
        page.goto(dev.url + "/assets/apis_enabled")
        expect(page.get_by_text("Never materialized")).to_have_count(0, timeout=30_000)
        shot(page, "07-asset-after-run.png")
    except BaseException:
        with contextlib.suppress(Exception):
            shot(page, f"failed-at-{step}.png")
        raise

    # The same run, through the GraphQL API...
    data = dev.graphql(
        "query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status "
        "tags { key value } assetSelection { path } } } }", {"runId": run_id})
    run = data["runOrError"]
    assert run["__typename"] == "Run", run
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": "sandbox"} in run["tags"]
    assert run["assetSelection"] == [{"path": ["apis_enabled"]}]

    # ...and through that DAGSTER_HOME's own instance.
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    instance = DagsterInstance.from_config(str(home))
    try:
        stored = instance.get_run_by_id(run_id)
        event = instance.get_latest_materialization_event(AssetKey("apis_enabled"))
    finally:
        instance.dispose()
    assert stored is not None and stored.status == DagsterRunStatus.SUCCESS
    assert stored.tags.get("dagster/partition") == "sandbox"
    assert event is not None and event.run_id == run_id
    assert event.asset_materialization.partition == "sandbox"
    assert DOCS_LINEAGE.stat().st_size > 10_000
