"""The view server over real HTTP on loopback: routes, byte ranges, what it refuses, the config it serves."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from spora_sd.errors import InvalidArgumentError, ViewerBundleMissingError
from spora_sd.viewer.server import ViewServer


def _get(server: ViewServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(small_cohort: Path) -> ViewServer:
    with ViewServer(small_cohort) as running:
        yield running


def test_page_lists_every_tissue_and_loads_nothing_from_another_host(server: ViewServer) -> None:
    status, headers, body = _get(server, "/")
    html = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for tissue in server.session.tissues:
        assert f'<option value="{tissue}">' in html
    assert f"/static/vitessce-bundle.js?v={server.bundle_version}" in html
    assert "http://" not in html and "https://" not in html


def test_the_versioned_bundle_is_kept_by_browsers_and_the_data_is_not(server: ViewServer) -> None:
    status, headers, body = _get(server, f"/static/vitessce-bundle.js?v={server.bundle_version}")
    assert status == 200 and len(body) > 1_000_000
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # without the version the URL may name another build: checked with the server every time
    assert _get(server, "/static/vitessce-bundle.js")[1]["Cache-Control"] == "no-cache"
    tissue = server.session.tissues[0]
    assert _get(server, f"/data/{tissue}/image.zarr/zarr.json")[1]["Cache-Control"] == "no-store"


def test_config_names_the_real_channels_and_the_served_stores(server: ViewServer, small_cohort: Path) -> None:
    import spora_sd

    tissue = server.session.tissues[0]
    status, _, body = _get(server, f"/api/config/{tissue}.json")
    config = json.loads(body)
    assert status == 200 and config["name"] == tissue
    files = {f["fileType"]: f["url"] for f in config["datasets"][0]["files"]}
    assert files["image.ome-zarr"] == f"{server.url}data/{tissue}/image.zarr"
    assert files["obsSegmentations.ome-zarr"] == f"{server.url}data/{tissue}/labels.zarr"
    assert files["anndata.zarr"] == f"{server.url}data/{tissue}/cells.zarr"
    assert {v["component"] for v in config["layout"]} == {"spatialBeta", "layerControllerBeta", "obsSets", "heatmap"}
    # the visible channels start with the nuclear marker, with a contrast window from the 99th percentile
    cohort = spora_sd.open_cohort(small_cohort)
    channels = cohort.image_metadata(tissue, "imc").channel_names
    targets = config["coordinationSpace"]["spatialTargetC"]
    windows = config["coordinationSpace"]["spatialChannelWindow"]
    first = channels[targets["init_A_image_0"]]
    assert first == "DNA1"
    upper = cohort.standardization("imc", "quantile_clipping")["image_level_upper_quantiles"]
    assert windows["init_A_image_0"] == [0.0, pytest.approx(float(upper.loc[tissue, first]))]
    # the cells are coloured by cell type from the start: every type selected, each with a colour
    selection = next(iter(config["coordinationSpace"]["obsSetSelection"].values()))
    types = sorted(cohort.cells(columns=["cell_type"], tissues=[tissue])["cell_type"].unique())
    assert selection == [["cell type", t] for t in types]


def test_image_chunks_are_one_channel_of_the_cohorts_pixels(server: ViewServer) -> None:
    import numpy as np

    tissue = server.session.tissues[1]
    pixels = np.asarray(server.session.cohort.image(tissue, "imc"))
    server.log.clear()
    status, headers, body = _get(server, f"/data/{tissue}/image.zarr/0/zarr.json")
    level = json.loads(body)
    assert status == 200 and level["chunk_grid"]["configuration"]["chunk_shape"] == [1, 512, 512]
    assert level["shape"] == list(pixels.shape)
    status, headers, body = _get(server, f"/data/{tissue}/image.zarr/0/c/2/0/0")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    chunk = np.frombuffer(body, "<u2").reshape(512, 512)
    h, w = pixels.shape[1:]
    assert (chunk[:h, :w] == pixels[2]).all() and chunk[h:].sum() == 0 and chunk[:, w:].sum() == 0
    status, _, body = _get(server, f"/data/{tissue}/image.zarr/zarr.json")
    assert status == 200 and json.loads(body)["attributes"]["ome"]["version"] == "0.5"
    # the log has every request; a chunk request names the cohort's shard files it reads
    assert [(r.path.rsplit("image.zarr/", 1)[1], r.status) for r in server.log.data_requests(tissue)] == [
        ("0/zarr.json", 200),
        ("0/c/2/0/0", 200),
        ("zarr.json", 200),
    ]
    folder = server.session.image_folder(tissue)
    assert server.image_files(tissue, "0/c/2/0/0") == (folder / "0" / "c" / "0" / "0" / "0",)
    assert server.image_files(tissue, "zarr.json") == (folder / "zarr.json",)
    assert server.image_files(tissue, "0/c/2/1/0") is None


def test_a_chunk_request_names_every_shard_it_reads(tmp_path: Path) -> None:
    import numpy as np

    import spora_sd

    # 300 px: 2 x 2 cohort chunks of 256 px in 4 shards, served as one 512 px chunk
    cohort = spora_sd.open_cohort(spora_sd.make_synthetic_cohort(tmp_path, n_tissues=1, image_size=300, n_cells=5))
    with ViewServer(cohort.path, cache=tmp_path / "cache") as server:
        tissue = server.session.tissues[0]
        pixels = np.asarray(cohort.image(tissue, "imc")[1])
        status, _, body = _get(server, f"/data/{tissue}/image.zarr/0/c/1/0/0")
        h, w = pixels.shape
        chunk = np.frombuffer(body, "<u2").reshape(512, 512)
        assert status == 200 and h > 256 and w > 256 and (chunk[:h, :w] == pixels).all()
        [logged] = server.log.data_requests(tissue)
        folder = server.session.image_folder(tissue)
        shards = [folder / "0" / "c" / "0" / str(y) / str(x) for y in (0, 1) for x in (0, 1)]
        assert server.image_files(tissue, logged.path.split("/image.zarr/", 1)[1]) == tuple(shards)
        assert all(shard.is_file() for shard in shards)


def test_store_files_are_served_as_the_byte_ranges_asked_for(server: ViewServer) -> None:
    tissue = server.session.tissues[1]
    server.session.tissue_view(tissue)
    chunk = server.session.store_folder(tissue) / "labels.zarr" / "0" / "0.0.0"
    data = chunk.read_bytes()
    server.log.clear()
    status, headers, body = _get(server, f"/data/{tissue}/labels.zarr/0/0.0.0", {"Range": "bytes=-20"})
    assert status == 206 and body == data[-20:]
    assert headers["Content-Range"] == f"bytes {len(data) - 20}-{len(data) - 1}/{len(data)}"
    status, _, body = _get(server, f"/data/{tissue}/labels.zarr/0/0.0.0", {"Range": "bytes=5-14"})
    assert status == 206 and body == data[5:15]
    logged = server.log.data_requests(tissue, "labels.zarr")
    assert [(r.status, r.byte_range) for r in logged] == [(206, (len(data) - 20, len(data))), (206, (5, 15))]


def test_answers_go_out_without_nagles_delay() -> None:
    """TCP_NODELAY on every connection (socketserver sets it in ``setup`` when the handler asks).

    An answer is written as headers, then body; with Nagle's algorithm a small body waits for the
    client's ACK of the headers, which Linux may delay by 40 ms (44 ms measured with http.client).
    The delay itself is measured in benchmarks, not here.
    """
    from spora_sd.viewer.server import _Handler

    assert _Handler.disable_nagle_algorithm is True


def test_unsatisfiable_range_is_416(server: ViewServer) -> None:
    tissue = server.session.tissues[0]
    server.session.tissue_view(tissue)
    status, headers, _ = _get(server, f"/data/{tissue}/labels.zarr/.zattrs", {"Range": "bytes=999999-"})
    assert status == 416 and headers["Content-Range"].startswith("bytes */")


@pytest.mark.parametrize(
    "path",
    [
        "/data/{t}/image.zarr/../../../../metadata/tissues.parquet",
        "/data/{t}/image.zarr/%2e%2e/%2e%2e/%2e%2e/%2e%2e/metadata/tissues.parquet",
        "/data/{t}/image.zarr/0/c/0/0/0/../../../../../../../metadata/tissues.parquet",
        "/data/{t}/image.zarr/0/c/0/0/%2e%2e/%2e%2e/%2e%2e/zarr.json",
        "/data/{t}/image.zarr/0/c/99/0/0",
        "/data/{t}/image.zarr/0/c/0/7/0",
        "/data/{t}/image.zarr/7/zarr.json",
        "/data/{t}/image.zarr/.zattrs",
        "/data/{t}/labels.zarr/../../../etc/passwd",
        "/data/not_a_tissue_0000/image.zarr/zarr.json",
        "/data/{t}/secrets.zarr/x",
        "/static/../server.py",
        "/api/config/nope.json",
    ],
)
def test_nothing_outside_a_store_is_served(server: ViewServer, path: str) -> None:
    status, _, body = _get(server, path.format(t=server.session.tissues[0]))
    assert status in (404, 500), body
    assert b"tissue_id" not in body and b"root:" not in body and b"import" not in body


def test_missing_bundle_says_how_to_build_it(small_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ViewerBundleMissingError, match="make vitessce-bundle"):
        ViewServer(small_cohort, bundle=tmp_path)


def test_unknown_tissue_is_refused_before_serving(small_cohort: Path) -> None:
    import spora_sd

    with pytest.raises(InvalidArgumentError, match="has no imc image"):
        spora_sd.view(small_cohort, tissue="small2025cohort_00000000_0009", open_browser=False, block=False)
