"""The docs stay true: every name the code defines is documented, and every relative link resolves.

Names are looked for as code spans (`name`), so a word that merely appears in prose does not count.
The names come from the code itself (the Pieces, the Definitions, the config models, the source),
so a new asset, check, sensor, config key, error constant or environment variable fails here until
the docs say what it is.
"""

from __future__ import annotations

import ast
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from substrate.pieces import PIECES
from substrate.config import EnvConfig
from gpuplat_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
# The packages whose source is gpuplat's (the sandbox included: its CLI is documented too).
SOURCE_PACKAGES = ("gpuplat_assets", "sensors", "substrate", "resources", "sandbox", "gpuplat_probe")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _documented(name: str, path: Path) -> bool:
    return f"`{name}`" in _text(path)


# ---- names from the code -----------------------------------------------------------------------
ASSET_NAMES = [p.name for p in PIECES]
CHECK_NAMES = sorted({"in_sync", *(c.name for p in PIECES for c in p.checks)})
SENSOR_NAMES = sorted(s.name for s in defs.sensors)
SCHEDULE_NAMES = sorted(s.name for s in defs.schedules)
JOB_NAMES = sorted(j.name for j in defs.jobs)


def _model_of(annotation) -> tuple[type[BaseModel] | None, str]:
    """The pydantic model a field holds, directly ("") or as items of a container ("[]")."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    # `Model | None` holds the model itself; tuple[...] and list[...] hold items of it.
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for arg in typing.get_args(annotation):
        inner, suffix = _model_of(arg)
        if inner is not None:
            return inner, suffix if optional else (suffix or "[]")
    return None, ""


def config_key_paths(model: type[BaseModel] = EnvConfig, prefix: str = "") -> list[str]:
    """Every key a config.yaml may hold, as a dotted path (items of a list as `key[].field`)."""
    paths = []
    for key, field in model.model_fields.items():
        if field.exclude:
            continue
        path = prefix + key
        paths.append(path)
        inner, suffix = _model_of(field.annotation)
        if inner is not None:
            paths.extend(config_key_paths(inner, f"{path}{suffix}."))
    return paths


CONFIG_KEYS = config_key_paths()


def _source_files() -> list[Path]:
    return sorted(f for pkg in SOURCE_PACKAGES for f in (ROOT / pkg).rglob("*.py"))


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environment_variables() -> list[str]:
    """Every variable the code reads with os.environ.get(...) or os.environ[...], constants resolved."""
    trees = {f: ast.parse(_text(f)) for f in _source_files()}
    everywhere: dict[str, str] = {}
    for tree in trees.values():
        everywhere.update(_module_constants(tree))
    names = set()
    for tree in trees.values():
        local = {**everywhere, **_module_constants(tree)}
        for node in ast.walk(tree):
            arg = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and _is_environ(node.func.value) and node.args:
                arg = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                arg = node.slice
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in local:
                names.add(local[arg.id])
    return sorted(names)


def error_constants() -> list[str]:
    """Every module-level ERR_* constant: the stable beginnings of gpuplat's error messages."""
    names = set()
    for f in _source_files():
        names.update(n for n in _module_constants(ast.parse(_text(f))) if n.startswith("ERR_"))
    return sorted(names)


ENV_VARS = environment_variables()
ERRORS = error_constants()


# ---- links ---------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _without_code(text: str) -> str:
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", _text(path)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def relative_links() -> list[tuple[Path, str]]:
    out = []
    for doc in MARKDOWN:
        for m in LINK.finditer(_without_code(_text(doc))):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            out.append((doc, target))
    return out


def _link_id(item: tuple[Path, str]) -> str:
    doc, target = item
    return f"{doc.relative_to(ROOT)} -> {target}"


# ---- the tests -----------------------------------------------------------------------------------
def test_the_docs_exist():
    for name in ("guide-gke.md", "guide-hetzner.md", "guide-byo.md", "reference.md", "troubleshooting.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


@pytest.mark.parametrize("asset", ASSET_NAMES)
def test_every_asset_is_in_the_reference(asset):
    assert _documented(asset, REFERENCE), f"asset {asset} is not documented in docs/reference.md"


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_every_check_is_in_the_reference(check):
    assert _documented(check, REFERENCE), f"check {check} is not documented in docs/reference.md"


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_every_check_has_a_remedy_in_troubleshooting(check):
    assert _documented(check, TROUBLESHOOTING), f"check {check} is not in docs/troubleshooting.md"


@pytest.mark.parametrize("name", SENSOR_NAMES + SCHEDULE_NAMES)
def test_every_sensor_and_schedule_is_in_the_reference(name):
    assert _documented(name, REFERENCE), f"sensor or schedule {name} is not documented in docs/reference.md"


@pytest.mark.parametrize("job", JOB_NAMES)
def test_every_job_is_in_the_reference(job):
    assert _documented(job, REFERENCE), f"job {job} is not documented in docs/reference.md"


def test_the_config_walk_finds_nested_keys():
    # Guards the walk itself: an empty or flat list would make the next test pass vacuously.
    assert {"substrate.gpu_pool.max", "substrate.prices.currency", "substrate.private_repo.env"} <= set(CONFIG_KEYS)
    assert "name" not in CONFIG_KEYS and "path" not in CONFIG_KEYS  # exclude=True: filled in by the loader


@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_every_config_key_is_in_the_reference(key):
    assert _documented(key, REFERENCE), f"config key {key} is not documented in docs/reference.md"


def test_the_environment_variable_scan_finds_the_known_ones():
    assert {"GPUPLAT_AUTO_APPROVE", "GPUPLAT_SANDBOX_DIR"} <= set(ENV_VARS)


def test_the_kubeconfig_variable_an_environment_may_name_is_in_the_reference():
    """Read through `substrate.kubeconfig_env`, so the scan above cannot see it."""
    from substrate.config import CLUSTER_KUBECONFIG
    assert _documented(CLUSTER_KUBECONFIG, REFERENCE)


@pytest.mark.parametrize("variable", ENV_VARS)
def test_every_environment_variable_is_in_the_reference(variable):
    assert _documented(variable, REFERENCE), f"environment variable {variable} is not documented in docs/reference.md"


@pytest.mark.parametrize("constant", ERRORS)
def test_every_error_constant_is_in_troubleshooting(constant):
    assert _documented(constant, TROUBLESHOOTING), f"{constant} is not explained in docs/troubleshooting.md"


def test_the_link_scan_finds_links():
    assert any(target.startswith("docs/") for _, target in relative_links())


@pytest.mark.parametrize("link", relative_links(), ids=_link_id)
def test_every_relative_link_points_at_a_file_that_exists(link):
    doc, target = link
    path_part, _, anchor = target.partition("#")
    dest = (doc.parent / path_part).resolve() if path_part else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{doc.relative_to(ROOT)} links to #{anchor}, not a heading of {dest.name}"


# ---- counts, Google methods and commands in the guides ----------------------------------------------
GUIDE_GKE = DOCS / "guide-gke.md"
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen".split())}
_COUNT = re.compile(r"\b(" + "|".join(NUMBERS) + r"|\d+) (?:Dagster )?assets\b", re.I)
# Which Google API each client attribute of resources/ speaks (the table's `<api>.<Method>` prefix).
CLIENT_APIS = {"_gke": "container", "_usage": "serviceusage", "_secrets": "secretmanager", "_catalog": "billing",
               "_registry": "artifactregistry", "_admin": "iam"}
_CALL = re.compile(r"self\.(_[a-z]+)\.([a-z_]+)\(")


def google_methods() -> list[str]:
    """`<api>.<Method>` of every Google API call resources/ makes through an official client."""
    found = set()
    for path in (ROOT / "resources").glob("*.py"):
        for attr, method in _CALL.findall(_text(path)):
            if attr in CLIENT_APIS:
                found.add(f"{CLIENT_APIS[attr]}.{''.join(p.title() for p in method.split('_'))}")
    return sorted(found)


GOOGLE_METHODS = google_methods()


def test_the_google_call_scan_finds_the_known_ones():
    assert {"container.SetNodePoolAutoscaling", "container.CreateCluster", "secretmanager.AddSecretVersion",
            "iam.CreateServiceAccount", "billing.ListSkus"} <= set(GOOGLE_METHODS)


@pytest.mark.parametrize("method", GOOGLE_METHODS)
def test_every_google_call_is_in_the_permissions_table(method):
    table = _text(GUIDE_GKE).split("## Permissions the caller needs", 1)[1].split("\n## ", 1)[0]
    assert f"| `{method}` |" in table, f"{method} is called but not in docs/guide-gke.md's permissions table"


def test_every_count_of_assets_in_the_docs_is_the_number_of_assets():
    wrong, seen = [], 0
    for doc in MARKDOWN:
        for match in _COUNT.finditer(_without_code(_text(doc))):
            seen += 1
            word = match.group(1).lower()
            n = int(word) if word.isdigit() else NUMBERS[word]
            if n != len(ASSET_NAMES):
                wrong.append(f"{doc.relative_to(ROOT)}: {match.group(0)!r}")
    assert seen >= 2, "the scan found no count of assets (docs/guide-gke.md and docs/reference.md state one)"
    assert not wrong, f"there are {len(ASSET_NAMES)} assets: " + "; ".join(wrong)


@pytest.mark.parametrize("asset", ASSET_NAMES)
def test_every_asset_is_in_the_gke_guide(asset):
    assert _documented(asset, GUIDE_GKE), f"asset {asset} is not in docs/guide-gke.md"


def test_no_doc_tells_users_to_install_sdk_components_gcloud_refuses_on_a_packaged_sdk():
    """`gcloud components install` fails on an apt-installed SDK ("the component manager is disabled
    for this installation"); a guide that prints it must say which installs it works on."""
    for doc in MARKDOWN:
        for block in FENCE.findall(_text(doc)):
            assert "gcloud components install" not in block, f"{doc.relative_to(ROOT)} prints `gcloud components install`"


def test_the_readme_quick_start_is_what_ci_runs():
    readme = _text(ROOT / "README.md")
    quick = readme.split("## Quick start", 1)[1]
    first_block = FENCE.search(quick).group(0).splitlines()[1:-1]
    assert len(first_block) == 2, first_block
    ci = _text(ROOT / ".ci" / "run")
    for command in first_block:
        assert command.strip() in ci, f".ci/run does not run the README's `{command.strip()}`"
