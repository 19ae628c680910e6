"""Reading an image never returns data the files do not hold: metadata that contradicts the cohort,
a disallowed dtype, a missing shard, a corrupt chunk, an oversized header are errors, not pixels."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from spora_sd.errors import CohortFormatError, InvalidArgumentError
from spora_sd.io.images import (
    ImageMetadata,
    image_metadata_problems,
    open_image_levels,
    open_level,
    shard_keys,
    write_image,
)
from spora_sd.validation.images import check_image

NAMES = ["DNA1", "PTPRC", "CD3E"]


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 3-channel 600 x 700 image: 3 x 3 shards of one 256 x 256 chunk each, an all-zero band included."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 1000, (3, 600, 700)).astype("uint16")
    pixels[:, 300:, :] = 0
    path = write_image(tmp_path / "d2020x_a1b2c3d4_0000.ome.zarr", pixels, mpp=1.0, channel_names=NAMES)
    return path, pixels


def _shards(path: Path) -> list[Path]:
    return sorted(p for p in (path / "0" / "c").rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# the writer stores everything a reader needs to tell a complete image from an incomplete one


def test_every_shard_is_written_even_all_zero(image: tuple[Path, np.ndarray]) -> None:
    path, _ = image
    found = {p.relative_to(path / "0").as_posix() for p in _shards(path)}
    assert found == {key for _, key in shard_keys((3, 600, 700), (3, 256, 256))}
    codecs = json.loads((path / "0" / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"]
    assert {"name": "zstd", "configuration": {"level": 0, "checksum": True}} in codecs


def test_writer_refuses_disallowed_dtypes(tmp_path: Path) -> None:
    for dtype in ("bool", "complex64"):
        with pytest.raises(InvalidArgumentError, match="dtype"):
            write_image(tmp_path / "x.ome.zarr", np.zeros((1, 8, 8), dtype), mpp=1.0, channel_names=["A"])


# --------------------------------------------------------------------------------------------------
# missing and corrupt chunks


def test_a_missing_shard_is_an_error_naming_it(image: tuple[Path, np.ndarray]) -> None:
    path, pixels = image
    (path / "0" / "c" / "0" / "1" / "2").unlink()  # y 256:512, x 512:700 (in the all-zero band)
    level = open_image_levels(path)[0]
    np.testing.assert_array_equal(level[:, :256, :].compute(), pixels[:, :256, :])  # other shards still read
    with pytest.raises(CohortFormatError, match=r"shard c/0/1/2 \(c 0:3, y 256:512, x 512:700\) is missing") as exc:
        level[:, 300:310, 600:610].compute()
    assert exc.value.rule == "image.chunk_missing" and exc.value.file.endswith("0/c/0/1/2")
    problems, _ = check_image(path, "img", mpp=1.0, expected_channels=NAMES)
    assert [(p.rule, "c/0/1/2" in p.message) for p in problems] == [("image.chunk_missing", True)]


def test_a_corrupt_chunk_is_an_error_naming_image_level_and_chunk(image: tuple[Path, np.ndarray]) -> None:
    path, _ = image
    shard = path / "0" / "c" / "0" / "0" / "1"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the compressed chunk: zstd's checksum catches it
    shard.write_bytes(bytes(data))
    assert check_image(path, "img", mpp=1.0, expected_channels=NAMES)[0] == []  # the index is intact
    with pytest.raises(CohortFormatError) as exc:
        open_image_levels(path)[0].compute()
    assert exc.value.rule == "image.corrupt"
    assert "level 0, chunk (0, 0, 1) (c 0:3, y 0:256, x 256:512) in c/0/0/1" in exc.value.message
    assert str(path) in str(exc.value)
    deep, _ = check_image(path, "img", mpp=1.0, expected_channels=NAMES, deep=True)
    assert [(p.rule, p.file) for p in deep] == [("image.corrupt", "img/0/c/0/0/1")]


@pytest.mark.parametrize("cut", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b + b"\0" * 64])
def test_a_truncated_or_grown_shard_is_an_error(image: tuple[Path, np.ndarray], cut) -> None:
    path, _ = image
    shard = _shards(path)[0]
    shard.write_bytes(cut(shard.read_bytes()))
    with pytest.raises(CohortFormatError) as exc:
        open_image_levels(path)[0][:, :10, :10].compute()
    assert exc.value.rule == "image.truncated" and exc.value.file == str(shard)


def test_reads_are_lazy_and_fused_to_the_crop(image: tuple[Path, np.ndarray]) -> None:
    path, pixels = image
    level = open_image_levels(path, chunk_bytes=1 << 30)[0]  # one dask chunk for the whole image
    for shard in _shards(path):
        if shard.relative_to(path / "0").as_posix() != "c/0/0/1":
            shard.unlink()
    # the crop touches one shard, which is there: the others' absence does not matter
    np.testing.assert_array_equal(level[:, 10:60, 270:300].compute(), pixels[:, 10:60, 270:300])


@pytest.mark.parametrize(
    "key",
    [
        (0,),
        (slice(None), 5, slice(3, 600, 7)),
        (Ellipsis, [5, 1, 300]),
        ([2, 0], slice(None), -1),
        (slice(None, None, -1), slice(10, 20), slice(0, 5)),
        (np.array([True, False, True]),),
        (slice(1, 2), slice(5, 5), slice(None)),
    ],
)
def test_checked_level_indexes_like_numpy(image: tuple[Path, np.ndarray], key: tuple) -> None:
    path, pixels = image
    got = open_level(path, "0")[key]
    np.testing.assert_array_equal(got, pixels[key])


# --------------------------------------------------------------------------------------------------
# arrays the layout does not allow


def _replace_level(path: Path, data: np.ndarray) -> None:
    shutil.rmtree(path / "0")
    chunks = (*data.shape[:-2], 256, 256)
    zarr.create_array(path / "0", shape=data.shape, dtype=data.dtype, chunks=chunks, shards=chunks)[...] = data


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda d: d > 0, "image.dtype"),
        (lambda d: d.astype("complex64"), "image.dtype"),
        (lambda d: d[0], "image.shape"),
        (lambda d: d[None], "image.shape"),
    ],
)
def test_disallowed_arrays_are_refused_by_reader_and_validator(image: tuple[Path, np.ndarray], make, rule: str) -> None:
    path, pixels = image
    _replace_level(path, make(pixels[:, :300, :300]))
    with pytest.raises(CohortFormatError) as exc:
        open_image_levels(path)
    assert exc.value.rule == rule
    problems, _ = check_image(path, "img", mpp=1.0, expected_channels=NAMES)
    assert rule in {p.rule for p in problems}


def test_oversized_header_is_refused_before_anything_is_allocated(
    image: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = image
    meta_file = path / "0" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["shape"] = [3, 1_000_000, 1_000_000]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CohortFormatError, match="SPORA_SD_MAX_IMAGE_PIXELS") as exc:
        open_image_levels(path)
    assert exc.value.rule == "image.too_large"
    assert "image.too_large" in {p.rule for p in check_image(path, "img", mpp=1.0, expected_channels=NAMES)[0]}
    monkeypatch.setenv("SPORA_SD_MAX_IMAGE_PIXELS", str(10**12))  # a user who means it can raise the limit
    assert open_image_levels(path)[0].shape == (3, 1_000_000, 1_000_000)  # lazy: still nothing allocated


# --------------------------------------------------------------------------------------------------
# the metadata must agree with the tables and the resolution folder


def _edit_ome(path: Path, edit) -> None:
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    edit(meta["attributes"]["ome"])
    meta_file.write_text(json.dumps(meta))


def _set_units(unit: str, scale: float):
    def edit(ome: dict) -> None:
        for axis in ome["multiscales"][0]["axes"][1:]:
            axis["unit"] = unit
        ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, scale, scale]

    return edit


def test_channel_labels_must_match_the_tables(image: tuple[Path, np.ndarray]) -> None:
    path, pixels = image
    assert open_image_levels(path, mpp=1.0, channel_names=NAMES)[0].shape == pixels.shape
    swapped = [NAMES[1], NAMES[0], NAMES[2]]
    with pytest.raises(CohortFormatError, match="omero channel labels") as exc:
        open_image_levels(path, mpp=1.0, channel_names=swapped)
    assert exc.value.rule == "image.channel_labels"
    with pytest.warns(UserWarning, match=r"image\.channel_labels.*on_mismatch='warn'"):
        rescued = open_image_levels(path, mpp=1.0, channel_names=swapped, on_mismatch="warn")
    np.testing.assert_array_equal(rescued[0].compute(), pixels)
    with pytest.raises(CohortFormatError, match=r"image\.channels"):  # a count mismatch is never waved through
        open_image_levels(path, channel_names=NAMES[:2], on_mismatch="warn")
    with pytest.raises(InvalidArgumentError, match="on_mismatch"):
        open_image_levels(path, on_mismatch="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("unit", "scale", "ok"),
    [
        ("micrometer", 1.0, True),
        ("nanometer", 1000.0, True),  # the same size, in another unit
        ("nanometer", 1.0, False),  # read as 1 µm before: now 0.001 µm, not the folder's 1_0mpp
        ("millimeter", 0.001, True),
        ("furlong", 1.0, False),
        ("micrometer", 0.5, False),
    ],
)
def test_scale_times_unit_must_match_the_folder(
    image: tuple[Path, np.ndarray], unit: str, scale: float, ok: bool
) -> None:
    path, _ = image
    _edit_ome(path, _set_units(unit, scale))
    problems, _ = check_image(path, "img", mpp=1.0, expected_channels=NAMES)
    assert [p.rule for p in problems] == ([] if ok else ["image.scale"])
    if ok:
        open_image_levels(path, mpp=1.0)
    else:
        with pytest.raises(CohortFormatError, match=r"image\.scale"):
            open_image_levels(path, mpp=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_image_levels(path, mpp=1.0, on_mismatch="warn")


def test_metadata_problems_name_what_disagrees() -> None:
    meta = ImageMetadata(Path("x.ome.zarr"), ["A", "B"], ["0"], [[1.0, 0.5, 1.0]], ("", "micrometer", "micrometer"))
    [(rule, message)] = image_metadata_problems(meta, mpp=1.0)
    assert rule == "image.scale" and "not square" in message
    unknown = ImageMetadata(Path("x.ome.zarr"), [], ["0"], [[1.0, 1.0, 1.0]], ("", "parsec", "parsec"))
    assert [r for r, _ in image_metadata_problems(unknown, mpp=1.0)] == ["image.scale"]
