"""Fixtures of the remote-cohort tests: the session's small cohort served over S3 (moto) and HTTP.

Both serve the same files as ``small_cohort`` (tests/conftest.py), read-only: a test that deletes or
alters an object uploads its own copy under a fresh prefix (``remote.helpers.fresh_s3_cohort``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from remote.helpers import RemoteCohort
from servers import HttpServer, S3Server


@pytest.fixture(scope="session")
def s3_cohort(s3_server: S3Server, small_cohort: Path) -> RemoteCohort:
    url = s3_server.upload_folder(small_cohort, f"cohorts/{small_cohort.name}")
    return RemoteCohort("s3", url, s3_server.storage_options, small_cohort, s3_server.log)


@pytest.fixture(scope="session")
def http_server(small_cohort: Path) -> Iterator[HttpServer]:
    with HttpServer(small_cohort.parent) as server:
        yield server


@pytest.fixture(scope="session")
def http_cohort(http_server: HttpServer, small_cohort: Path) -> RemoteCohort:
    return RemoteCohort("http", f"{http_server.url}/{small_cohort.name}", None, small_cohort, http_server.log)


@pytest.fixture(params=["s3", "http"])
def remote(request: pytest.FixtureRequest) -> RemoteCohort:
    """The session cohort over S3, then over HTTP."""
    return request.getfixturevalue(f"{request.param}_cohort")
