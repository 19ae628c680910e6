"""Shared fixtures: small synthetic cohorts, made once per session and copied when a test mutates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.browser import browser_page, chromium  # noqa: F401  (fixtures: headless Chromium for page tests)
from tests.xdist_groups import pytest_collection_modifyitems  # noqa: F401  (xdist_group marks under xdist)

# Tests never touch the user's LaminDB settings or the internet: see tests/lamin/conftest.py.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 4-tissue IMC + H&E cohort with a ragged panel (read-only: copy before mutating)."""
    import spora_sd

    root = tmp_path_factory.mktemp("cohorts")
    return spora_sd.make_synthetic_cohort(root, name="small2025cohort", n_tissues=4, image_size=200, n_cells=40, seed=0)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server on loopback, one per test session (see tests/servers.py)."""
    from servers import S3Server

    with S3Server() as server:
        yield server
