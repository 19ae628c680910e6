"""Failures against real loopback servers: a stopped server, a deleted object, bad keys, and a proxy that
delays, hangs, drops or throttles. Each is one SporaError line naming the URL, retried where that helps."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from remote.helpers import RemoteCohort, fresh_s3_cohort
from servers import ACCESS_KEY, REGION, SECRET_KEY, AuthS3Server, FaultProxy, HttpServer, S3Server

import spora_sd
from spora_sd.errors import CohortFormatError, CohortNotFoundError, RemoteAccessError

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error.</Message><RequestId>1</RequestId></Error>"
)


def _s3_options(endpoint: str, *, attempts: int = 3, timeout: float = 2) -> dict[str, Any]:
    """Options for a server at ``endpoint``, with few retries and short timeouts (tests stay fast)."""
    return {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
        "config_kwargs": {
            "retries": {"max_attempts": attempts, "mode": "standard"},
            "connect_timeout": timeout,
            "read_timeout": timeout,
        },
    }


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


def _assert_one_line(error: BaseException, url: str) -> None:
    text = str(error)
    assert url in text
    assert "\n" not in text
    assert SECRET_KEY not in text


def test_stopped_server(small_cohort: Path) -> None:
    server = S3Server().start()
    url = server.upload_folder(small_cohort, "down/small2025cohort")
    options = _s3_options(server.endpoint_url, attempts=2, timeout=1)
    cohort = spora_sd.open_cohort(url, storage_options=options)
    tissue = cohort.tissue_ids("imc")[0]
    image = cohort.image(tissue, "imc")
    server.stop()
    with pytest.raises(RemoteAccessError) as info:
        image[:, :32, :32].compute()
    assert info.value.kind == "unreachable"
    _assert_one_line(info.value, f"{url}/imc/1_0mpp/images/{tissue}.ome.zarr/0")
    assert "endpoint" in str(info.value)
    with pytest.raises(RemoteAccessError) as info:
        spora_sd.open_cohort(url.replace("small2025cohort", "other2025cohort"), storage_options=options)
    assert info.value.kind == "unreachable"


def test_deleted_objects_are_named(s3_server: S3Server, small_cohort: Path) -> None:
    url = fresh_s3_cohort(s3_server, small_cohort)
    prefix = url.removeprefix(f"s3://{s3_server.bucket}/")
    local = spora_sd.open_cohort(small_cohort)
    tissue = local.tissue_ids("imc")[0]
    shard = f"imc/1_0mpp/images/{tissue}.ome.zarr/0/c/0/0/0"
    mask = f"segmentations/1_0mpp/cell_masks/instances/{tissue}.npz"
    for key in (shard, mask):
        s3_server.delete(f"{prefix}/{key}")
    cohort = spora_sd.open_cohort(url, storage_options=s3_server.storage_options)
    with pytest.raises(CohortFormatError) as info:  # a missing shard is an error, never zeros
        cohort.image(tissue, "imc")[:, :32, :32].compute()
    assert info.value.rule == "image.chunk_missing"
    _assert_one_line(info.value.file, f"{url}/{shard}")
    with pytest.raises(CohortNotFoundError) as info:
        cohort.instance_mask(tissue)
    _assert_one_line(info.value, f"{url}/{mask}")
    report = spora_sd.validate(url, storage_options=s3_server.storage_options)
    rules = {(p.rule, p.file) for p in report.errors}
    assert ("image.chunk_missing", f"imc/1_0mpp/images/{tissue}.ome.zarr/0") in rules
    assert any(rule == "mask.missing" and tissue in file for rule, file in rules), sorted(rules)
    s3_server.delete(f"{prefix}/metadata/cells.parquet")
    cohort = spora_sd.open_cohort(url, storage_options=s3_server.storage_options)
    with pytest.raises(CohortNotFoundError) as info:
        cohort.cells()
    _assert_one_line(info.value, f"{url}/metadata/cells.parquet")


def test_bad_keys() -> None:
    with AuthS3Server() as server:
        options = _s3_options(server.endpoint_url)
        options["key"], options["secret"] = "AKIAWRONGWRONGWRONG0", "wrong-secret-do-not-print"
        with pytest.raises(RemoteAccessError) as info:
            spora_sd.open_cohort("s3://spora/cohorts/x2025cohort", storage_options=options)
    assert info.value.kind == "credentials"
    _assert_one_line(info.value, "s3://spora/cohorts/x2025cohort")
    assert "wrong-secret-do-not-print" not in str(info.value)
    assert "AWS_ACCESS_KEY_ID" in str(info.value)


def test_timeout(s3_cohort: RemoteCohort, s3_proxy: FaultProxy) -> None:
    options = _s3_options(s3_proxy.url, attempts=2, timeout=1)
    cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=options)
    tissue = cohort.tissue_ids("imc")[0]
    image = cohort.image(tissue, "imc")
    s3_proxy.hang = True
    with pytest.raises(RemoteAccessError) as info:
        image[:, :32, :32].compute()
    assert info.value.kind == "timeout"
    _assert_one_line(info.value, s3_cohort.url)
    assert s3_proxy.log.count >= 2  # retried once


def test_throttling_is_retried_then_reported(s3_cohort: RemoteCohort, s3_proxy: FaultProxy) -> None:
    options = _s3_options(s3_proxy.url, attempts=4)
    cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=options)
    tissue = cohort.tissue_ids("imc")[0]
    expected = spora_sd.open_cohort(s3_cohort.local).image(tissue, "imc")[:, :32, :32].compute()
    s3_proxy.fail_next(2, 503, SLOW_DOWN)
    with s3_proxy.log.recording() as log:
        np.testing.assert_array_equal(cohort.image(tissue, "imc")[:, :32, :32].compute(), expected)
    assert log.count >= 3  # two refusals, then the answer
    s3_proxy.fail_next(-1, 503, SLOW_DOWN)
    with pytest.raises(RemoteAccessError) as info:
        cohort.image(cohort.tissue_ids("imc")[1], "imc")[:, :32, :32].compute()
    assert info.value.kind == "throttled"
    _assert_one_line(info.value, s3_cohort.url)
    s3_proxy.fail_next(-1, 500, INTERNAL)
    with pytest.raises(RemoteAccessError) as info:
        cohort.image(cohort.tissue_ids("imc")[1], "imc")[:, :32, :32].compute()
    assert info.value.kind == "server"


def test_dropped_connections(s3_cohort: RemoteCohort, s3_proxy: FaultProxy) -> None:
    options = _s3_options(s3_proxy.url, attempts=2, timeout=1)
    s3_proxy.drop = True
    with pytest.raises(RemoteAccessError) as info:
        spora_sd.open_cohort(s3_cohort.url, storage_options=options)
    assert info.value.kind == "unreachable"
    _assert_one_line(info.value, s3_cohort.url)


def test_http_faults_are_retried(small_cohort: Path, tmp_path: Path) -> None:
    shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    with HttpServer(tmp_path) as server, FaultProxy(server.url) as proxy:
        url = f"{proxy.url}/{small_cohort.name}"
        cohort = spora_sd.open_cohort(url)
        tissue = cohort.tissue_ids("imc")[0]
        expected = spora_sd.open_cohort(small_cohort).image(tissue, "imc")[:, :32, :32].compute()
        image = cohort.image(tissue, "imc")
        proxy.fail_next(2, 503)
        np.testing.assert_array_equal(image[:, :32, :32].compute(), expected)  # retried
        proxy.fail_next(-1, 502)
        with pytest.raises(RemoteAccessError) as info:
            image[:, 32:64, :32].compute()
        assert info.value.kind == "server"
        _assert_one_line(info.value, url)
        proxy.reset()
        (tmp_path / small_cohort.name / "metadata" / "cells.parquet").unlink()
        with pytest.raises(CohortNotFoundError) as missing:
            spora_sd.open_cohort(url).cells()
        _assert_one_line(missing.value, f"{url}/metadata/cells.parquet")
        server.stop()
        with pytest.raises(RemoteAccessError) as down:
            image[:, 64:96, :32].compute()
        assert down.value.kind == "unreachable"


def test_image_metadata_read_in_the_background_fails_as_a_plain_read(
    s3_server: S3Server, s3_cohort: RemoteCohort, s3_proxy: FaultProxy, small_cohort: Path
) -> None:
    # to_spatialdata reads every image's zarr.json in the background (S3, obstore) and opens each image as
    # its metadata arrives: a missing file and a failing server are reported as they are otherwise
    url = fresh_s3_cohort(s3_server, small_cohort)
    prefix = url.removeprefix(f"s3://{s3_server.bucket}/")
    tissue = spora_sd.open_cohort(small_cohort).tissue_ids("imc")[0]
    s3_server.delete(f"{prefix}/imc/1_0mpp/images/{tissue}.ome.zarr/zarr.json")
    cohort = spora_sd.open_cohort(url, storage_options=s3_server.storage_options)
    with pytest.raises(CohortFormatError) as info:
        spora_sd.to_spatialdata(cohort, elements=("images",))
    assert info.value.rule == "image.unreadable"
    _assert_one_line(info.value, f"{url}/imc/1_0mpp/images/{tissue}.ome.zarr")
    cohort._zarr_json.wait()  # nothing left in flight

    cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=_s3_options(s3_proxy.url, attempts=2))
    tissues = cohort.tissue_ids("imc")
    s3_proxy.fail_next(-1, 500, INTERNAL)  # retries through obstore: test_throttling_is_retried_then_reported
    cohort.prefetch_images("imc", None, tissues, wait=False)
    with pytest.raises(RemoteAccessError) as info:
        cohort.image_metadata(tissues[0], "imc")
    assert info.value.kind == "server"
    _assert_one_line(info.value, f"{s3_cohort.url}/imc/1_0mpp/images/{tissues[0]}.ome.zarr/zarr.json")
    s3_proxy.fail_next(0, 500)
    cohort._zarr_json.wait()
