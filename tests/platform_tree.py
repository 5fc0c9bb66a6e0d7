"""A platform checkout for test and benchmark environments, built from the project's example tree."""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE_PLATFORM = Path(__file__).resolve().parents[1] / "example-platform"


def example_platform(root: Path, names, project: str = "gpuplat-test") -> Path:
    """Make `root` a platform checkout for environments `names`: the project's example tree, its
    clusters/sandbox/ folder under each name (a fork keeps one folder per environment), ESO's values
    naming the Google service account of `project` (as a fork's name its own project)."""
    shutil.copytree(EXAMPLE_PLATFORM / "bootstrap", root / "bootstrap", dirs_exist_ok=True)
    values = root / "platform" / "external-secrets" / "values.yaml"
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text((EXAMPLE_PLATFORM / "platform" / "external-secrets" / "values.yaml").read_text()
                      .replace("@gpuplat-sandbox.iam", f"@{project}.iam"))
    for name in names:
        target = root / "clusters" / name
        shutil.copytree(EXAMPLE_PLATFORM / "clusters" / "sandbox", target, dirs_exist_ok=True)
        for f in target.rglob("*.yaml"):
            f.write_text(f.read_text().replace("clusters/sandbox/", f"clusters/{name}/"))
    return root
