"""obstore as the store of remote pixel reads: chosen for S3 when it can express the options, s3fs otherwise;
the same pixels either way, and its failures named in RemoteAccessError's kinds."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError
from servers import S3Server

import spora_sd
from spora_sd.io.objectstore import obstore_kind, s3_store
from spora_sd.io.remote import CheckedStore, zarr_store


def _level(cohort: spora_sd.Cohort, tissue: str) -> Any:
    return cohort.paths.image("imc", 1.0, tissue) / "0"


def test_s3_pixels_are_read_through_obstore_else_s3fs(s3_server: S3Server, small_cohort: Path) -> None:
    from zarr.storage import FsspecStore, ObjectStore

    url = s3_server.upload_folder(small_cohort, f"objectstore/{small_cohort.name}")
    local = spora_sd.open_cohort(small_cohort)
    tissue = local.tissue_ids("imc")[0]
    expected = local.image(tissue, "imc")[:, 5:70, 9:90].compute()
    fallback = {**s3_server.storage_options, "default_block_size": 5 << 20}  # no obstore equivalent
    for options, kind in ((s3_server.storage_options, ObjectStore), (fallback, FsspecStore)):
        cohort = spora_sd.open_cohort(url, storage_options=options)
        store = zarr_store(_level(cohort, tissue))
        assert isinstance(store, CheckedStore) and isinstance(store._store, kind)
        np.testing.assert_array_equal(cohort.image(tissue, "imc")[:, 5:70, 9:90].compute(), expected)
    image = spora_sd.open_cohort(url, storage_options=s3_server.storage_options).image(tissue, "imc")
    # dask ships arrays to workers by pickling them: the store goes along
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(image))[:, 5:70, 9:90].compute(), expected)


def test_options_obstore_cannot_express_leave_s3fs(tmp_path: Path) -> None:
    from upath import UPath

    assert s3_store(UPath("s3://spora/c", key="k", secret="s", skip_instance_cache=True)) is not None
    assert s3_store(UPath("s3://spora/c", key="k", secret="s", client_kwargs={"verify": False})) is None
    assert s3_store(UPath("https://example.org/c")) is None
    assert s3_store(tmp_path) is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (NotFoundError("no such object"), "missing"),
        (PermissionDeniedError("denied"), "credentials"),
        (GenericError("Server returned non-2xx status code: 503 Service Unavailable: SlowDown"), "throttled"),
        (GenericError("Server returned non-2xx status code: 500 Internal Server Error"), "server"),
        (GenericError("HTTP error: error sending request, retry_timeout: 4s\nHttpError {\n kind: Timeout,"), "timeout"),
        (
            GenericError("HTTP error: error sending request, retry_timeout: 4s\nHttpError {\n kind: Connect,"),
            "unreachable",
        ),
        (ValueError("not obstore's"), None),
    ],
)
def test_obstore_failures_get_their_kind(error: BaseException, kind: str | None) -> None:
    assert obstore_kind(error) == kind
