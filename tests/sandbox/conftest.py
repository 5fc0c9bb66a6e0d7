"""The sandbox's own tests call its APIs directly, as a project that has enabled them would.

A new sandbox project has only Service Usage and Resource Manager enabled (as a new GCP project), and
every other API answers 403 SERVICE_DISABLED until it is enabled (`tests/sandbox/test_identity.py` and
`test_compute_billing.py` show that). These tests exercise the APIs themselves, so their projects
start with everything enabled (`tests.conftest.enable_all`); gpuplat's own tests (tests/assets) start
blank and enable what they need.
"""

from __future__ import annotations

import pytest

from tests.conftest import enable_all

@pytest.fixture(autouse=True)
def apis_enabled(request):
    # Service Usage's own tests start from a new project, as the API they test would see one.
    if "sandbox" not in request.fixturenames or request.module.__name__.endswith("test_serviceusage"):
        return
    enable_all(request.getfixturevalue("sandbox"))
