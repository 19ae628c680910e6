"""The bad-input corpus: broken cohorts made by mutating a valid one.

Each case must be refused by the validator with its file and a stable rule id, and neither the
reader nor the validator (nor the CLI) may crash with a traceback. Cases marked ``reader_raises``
are ones a reader must refuse too (a :class:`~spora_sd.errors.SporaError` from ``open_cohort``,
``to_spatialdata`` or computing their pixels), because reading them would return wrong data:
channels under another name, zeros for a missing shard, a corrupt chunk.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app
from spora_sd.errors import CohortFormatError, SporaError
from spora_sd.io.cohort import open_cohort
from spora_sd.layout import CohortPaths

DATASET = "corpus2025base"


@pytest.fixture(scope="module")
def base_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    path = spora_sd.make_synthetic_cohort(
        root, name=DATASET, n_tissues=3, image_size=160, n_cells=25, n_channels=6, seed=3
    )
    report = spora_sd.validate(path)
    assert report.ok, str(report)
    return path


@dataclass
class Case:
    id: str
    mutate: Callable[[Path], None]
    rule: str
    file: str  # a fragment of the reported file path
    reader_raises: bool = False  # the reader must refuse it (a SporaError), not read it
    reader_rule: str | None = None  # the rule of the reader's CohortFormatError, when not ``rule``
    deep: bool = False  # found by validate(deep=True) only (it decodes the pixels)


def _write_parquet(df: pd.DataFrame, path: Path, index: bool = False) -> None:
    # Deliberately bypasses spora_sd's writers (they would refuse the broken table).
    pq.write_table(pa.Table.from_pandas(df, preserve_index=index), path)


def _edit_table(rel: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        df = pd.read_parquet(path)
        index = any(n is not None for n in df.index.names)
        _write_parquet(edit(df), path, index=index)

    return mutate


def _first_tissue(root: Path, modality: str = "imc") -> str:
    df = pd.read_parquet(CohortPaths(root).tissues)
    return str(df.loc[df["modality"] == modality, "tissue_id"].iloc[0])


def _image(root: Path) -> Path:
    return CohortPaths(root).image("imc", 1.0, _first_tissue(root))


def _instance(root: Path) -> Path:
    return CohortPaths(root).instance_mask(1.0, _first_tissue(root))


def _tissue_mask(root: Path) -> Path:
    return CohortPaths(root).tissue_mask(1.0, _first_tissue(root))


def _semantic(root: Path) -> Path:
    return CohortPaths(root).semantic_mask(1.0, "cell_types", _first_tissue(root))


def _rewrite_mask(locate: Callable[[Path], Path], change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = locate(root)
        mask = np.load(path)["mask"]
        np.savez_compressed(path, mask=change(mask))

    return mutate


def _drop_column(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: df.drop(columns=[column])


def _set_first(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df[column] = df[column].astype(object)
        df.loc[df.index[0], column] = value
        return df

    return edit


def _pickled_mask(root: Path) -> None:
    path = _instance(root)
    np.savez(path, mask=np.array([[{"payload": 1}]], dtype=object))


def _missing_key(root: Path) -> None:
    path = _tissue_mask(root)
    mask = np.load(path)["mask"]
    np.savez_compressed(path, labels=mask)


def _zarr_v2(root: Path) -> None:
    path = _image(root)
    shutil.rmtree(path)
    zarr.open_group(path, mode="w", zarr_format=2).create_array("0", shape=(1, 8, 8), dtype="uint16")


def _rewrite_level(root: Path, **kwargs: object) -> None:
    path = _image(root) / "0"
    data = zarr.open_array(path, mode="r")[...]
    attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    shutil.rmtree(path)
    arr = zarr.create_array(path, shape=data.shape, dtype=data.dtype, attributes=attrs, **kwargs)  # type: ignore[arg-type]
    arr[...] = data


def _small_chunks(root: Path) -> None:
    c = zarr.open_array(_image(root) / "0").shape[0]
    _rewrite_level(root, chunks=(c, 128, 128), shards=(c, 256, 256))


def _no_shards(root: Path) -> None:
    c = zarr.open_array(_image(root) / "0").shape[0]
    _rewrite_level(root, chunks=(c, 256, 256))


def _truncate_shard(root: Path) -> None:
    chunk_dir = _image(root) / "0" / "c"
    files = sorted(p for p in chunk_dir.rglob("*") if p.is_file())
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])


def _edit_ome(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        meta_file = _image(root) / "zarr.json"
        meta = json.loads(meta_file.read_text())
        edit(meta["attributes"])
        meta_file.write_text(json.dumps(meta))

    return mutate


def _drop_ome(attrs: dict) -> None:
    attrs.pop("ome")


def _wrong_scale(attrs: dict) -> None:
    attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 0.5, 0.5]


def _wrong_labels(attrs: dict) -> None:
    channels = attrs["ome"]["omero"]["channels"]
    channels[0]["label"], channels[1]["label"] = channels[1]["label"], channels[0]["label"]


def _extra_channel(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    missing = [c for c in df.columns if not bool(df.iloc[0][c])]
    column = missing[0] if missing else None
    if column is None:  # the first tissue has every channel: drop one instead
        df.iloc[0, 0] = False
    else:
        df.loc[df.index[0], column] = True
    return df


def _first_tissue_row_first(df: pd.DataFrame) -> pd.DataFrame:
    return df


def _symlink_escape(root: Path) -> None:
    outside = root.parent / "outside.ome.zarr"
    shutil.copytree(_image(root), outside)
    tid = _first_tissue(root)
    link = CohortPaths(root).images_dir("imc", 1.0) / f"{DATASET}_zzzzzzzz_0000.ome.zarr"
    link.symlink_to(outside, target_is_directory=True)
    del tid


def _leftover_temporary(root: Path) -> None:
    (CohortPaths(root).images_dir("imc", 1.0) / ".x.ome.zarr.tmp-abc123").mkdir()


def _tile_out_of_bounds(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[df.index[0], "row"] = 10_000
    return df


def _duplicate_row(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[0]]], ignore_index=True)


def _remove(locate: Callable[[Path], Path]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = locate(root)
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return mutate


def _garbage(locate: Callable[[Path], Path]) -> Callable[[Path], None]:
    return lambda root: locate(root).write_bytes(b"this is not a parquet file")


def _std_dir(root: Path) -> Path:
    return CohortPaths(root).standardization_dir("imc", 1.0, "quantile_clipping", "uq_0.99")


def _zero_one_cell(mask: np.ndarray) -> np.ndarray:
    mask = mask.copy()
    label = np.unique(mask[mask > 0])[0]
    mask[mask == label] = 0
    return mask


def _pad(mask: np.ndarray) -> np.ndarray:
    return np.pad(mask, ((0, 1), (0, 0)))


def _non_binary(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype("uint8")
    mask[0, 0] = 7
    return mask


def _unknown_category(mask: np.ndarray) -> np.ndarray:
    mask = mask.copy()
    mask[0, 0] = 99
    return mask


# --------------------------------------------------------------------------------------------------
# metadata that contradicts the cohort, missing and corrupt chunks, untrusted sizes, wrong types


def _swap_first_two_rows(df: pd.DataFrame) -> pd.DataFrame:
    order = [1, 0, *range(2, len(df))]
    return df.iloc[order].reset_index(drop=True)


def _reorder_panel_everywhere(root: Path) -> None:
    """channels.parquet rows swapped, and channels_per_tissue.parquet and cells.parquet columns with
    them: the tables agree with each other, only the images' omero labels still say the truth."""
    paths = CohortPaths(root)
    channels = pd.read_parquet(paths.channels("imc"))
    _write_parquet(_swap_first_two_rows(channels), paths.channels("imc"))
    a, b = channels["channel_name"].iloc[:2]
    for file, index in ((paths.channels_per_tissue("imc"), True), (paths.cells, False)):
        df = pd.read_parquet(file)
        columns = list(df.columns)
        if a in columns and b in columns:
            i, j = columns.index(a), columns.index(b)
            columns[i], columns[j] = columns[j], columns[i]
        _write_parquet(df[columns], file, index=index)


def _axis_unit(unit: str) -> Callable[[dict], None]:
    def edit(attrs: dict) -> None:
        for axis in attrs["ome"]["multiscales"][0]["axes"][1:]:
            axis["unit"] = unit

    return edit


def _non_square(attrs: dict) -> None:
    attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 1.0, 2.0]


def _omero_not_a_list(attrs: dict) -> None:
    attrs["ome"]["omero"]["channels"] = "DNA1"


def _level_path_escape(attrs: dict) -> None:
    attrs["ome"]["multiscales"][0]["datasets"][0]["path"] = "../../../0"


def _he_labels(attrs: dict) -> None:
    for channel, name in zip(attrs["ome"]["omero"]["channels"], ["B", "G", "R"], strict=True):
        channel["label"] = name


def _he_image(root: Path) -> Path:
    return CohortPaths(root).image("he", 1.0, _first_tissue(root, "he"))


def _edit_he_ome(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        meta_file = _he_image(root) / "zarr.json"
        meta = json.loads(meta_file.read_text())
        edit(meta["attributes"])
        meta_file.write_text(json.dumps(meta))

    return mutate


def _replace_level(make: Callable[[np.ndarray], np.ndarray], **kwargs: object) -> Callable[[Path], None]:
    """Level 0 rewritten with other data (another dtype or number of dimensions), metadata kept."""

    def mutate(root: Path) -> None:
        path = _image(root) / "0"
        data = make(zarr.open_array(path, mode="r")[...])
        shutil.rmtree(path)
        chunks = (*data.shape[:-2], 256, 256)
        arr = zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=chunks, **kwargs)  # type: ignore[arg-type]
        arr[...] = data

    return mutate


def _shard_files(root: Path) -> list[Path]:
    return sorted(p for p in (_image(root) / "0" / "c").rglob("*") if p.is_file())


def _delete_all_shards(root: Path) -> None:
    shutil.rmtree(_image(root) / "0" / "c")  # what an interrupted copy leaves: metadata, no chunks


def _flip_byte(position: Callable[[int], int]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        file = _shard_files(root)[0]
        data = bytearray(file.read_bytes())
        data[position(len(data))] ^= 0xFF
        file.write_bytes(bytes(data))

    return mutate


def _append_garbage(root: Path) -> None:
    file = _shard_files(root)[0]
    file.write_bytes(file.read_bytes() + b"\x00" * 100)


def _empty_shard(root: Path) -> None:
    _shard_files(root)[0].write_bytes(b"")


def _edit_level_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        meta_file = _image(root) / "0" / "zarr.json"
        meta = json.loads(meta_file.read_text())
        edit(meta)
        meta_file.write_text(json.dumps(meta))

    return mutate


def _huge_image(meta: dict) -> None:
    meta["shape"] = [meta["shape"][0], 1_000_000, 1_000_000]


def _many_channels(meta: dict) -> None:
    meta["shape"][0] = 5000


def _huge_npz_header(locate: Callable[[Path], Path]) -> Callable[[Path], None]:
    """A mask whose .npy header declares 200000 x 200000 pixels (40 billion), with a few bytes of data."""

    def mutate(root: Path) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<u4", "fortran_order": False, "shape": (200_000, 200_000)}
        )
        with zipfile.ZipFile(locate(root), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("mask.npy", header.getvalue() + b"\x00" * 64)

    return mutate


def _truncated_npz_member(locate: Callable[[Path], Path]) -> Callable[[Path], None]:
    """A zip whose mask.npy holds half of its pixels: the header promises more than is there."""

    def mutate(root: Path) -> None:
        path = locate(root)
        mask = np.load(path)["mask"]
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, mask)
        raw = buffer.getvalue()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("mask.npy", raw[: len(raw) // 2])

    return mutate


def _cut_file(locate: Callable[[Path], Path]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = locate(root)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return mutate


def _rename_tissue(new: Callable[[str], str]) -> Callable[[Path], None]:
    """Rename the first imc tissue everywhere in tissues.parquet (so only its spelling is wrong)."""

    def mutate(root: Path) -> None:
        path = CohortPaths(root).tissues
        df = pd.read_parquet(path)
        old = _first_tissue(root)
        df["tissue_id"] = df["tissue_id"].astype(object).where(df["tissue_id"] != old, new(old))
        _write_parquet(df, path)

    return mutate


def _duplicate_cpt_row(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[0]]])


def _negative_label(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype(np.int32)
    mask[0, 0] = -1
    return mask


CASES = [
    Case(
        "missing_column",
        _edit_table("metadata/tissues.parquet", _drop_column("modality")),
        "table.column.missing",
        "tissues.parquet",
    ),
    Case(
        "wrong_dtype",
        _edit_table("metadata/cells.parquet", lambda d: d.assign(cell_id=d["cell_id"].astype(str))),
        "table.column.dtype",
        "cells.parquet",
    ),
    Case(
        "duplicate_id",
        _edit_table("metadata/tissues.parquet", _duplicate_row),
        "table.key.duplicate",
        "tissues.parquet",
    ),
    Case(
        "nan_id",
        _edit_table("metadata/cells.parquet", _set_first("tissue_id", None)),
        "table.column.null",
        "cells.parquet",
    ),
    Case("mask_shape_mismatch", _rewrite_mask(_tissue_mask, _pad), "mask.shape", "tissue_masks/"),
    Case("missing_mask_label", _rewrite_mask(_instance, _zero_one_cell), "mask.labels_mismatch", "instances/"),
    Case("pickled_npz", _pickled_mask, "mask.pickled", "instances/"),
    Case("missing_mask_key", _missing_key, "mask.key", "tissue_masks/"),
    Case("zarr_v2_image", _zarr_v2, "image.zarr_format", ".ome.zarr"),
    Case("wrong_chunk_shape", _small_chunks, "image.chunks", ".ome.zarr/0"),
    Case("not_sharded", _no_shards, "image.shards", ".ome.zarr/0"),
    Case("truncated_chunk", _truncate_shard, "image.truncated", ".ome.zarr/0/c/"),
    Case("missing_ome_metadata", _edit_ome(_drop_ome), "image.ome_metadata", ".ome.zarr"),
    Case("wrong_scale", _edit_ome(_wrong_scale), "image.scale", ".ome.zarr"),
    Case("wrong_channel_labels", _edit_ome(_wrong_labels), "image.channel_labels", ".ome.zarr"),
    Case(
        "channel_count_mismatch",
        _edit_table("imc/channels_per_tissue.parquet", _extra_channel),
        "image.channels",
        ".ome.zarr/0",
    ),
    Case(
        "path_escaping_tissue_id",
        _edit_table("metadata/tissues.parquet", _set_first("tissue_id", "../../etc/passwd")),
        "layout.path_escape",
        "tissues.parquet",
    ),
    Case("symlink_escape", _symlink_escape, "layout.path_escape", "images/"),
    Case("unknown_modality_folder", lambda r: (r / "rna").mkdir(), "layout.unknown_entry", "rna"),
    Case(
        "bad_resolution_folder",
        lambda r: (r / "imc" / "1_0mpp").rename(r / "imc" / "1_00mpp"),
        "layout.resolution_name",
        "imc/1_00mpp",
    ),
    Case(
        "malformed_image_name",
        lambda r: _image(r).rename(_image(r).with_name("foo.ome.zarr")),
        "layout.filename",
        "foo.ome.zarr",
    ),
    Case("leftover_temporary", _leftover_temporary, "layout.temporary_file", ".tmp-"),
    Case("tissues_missing", _remove(lambda r: CohortPaths(r).tissues), "layout.tissues_missing", "tissues.parquet"),
    Case("cells_not_parquet", _garbage(lambda r: CohortPaths(r).cells), "table.unreadable", "cells.parquet"),
    Case(
        "channels_wrong_dtype",
        _edit_table("imc/channels.parquet", lambda d: d.assign(qc_pass=d["qc_pass"].astype(str))),
        "table.column.dtype",
        "channels.parquet",
    ),
    Case(
        "unknown_modality_value",
        _edit_table("metadata/tissues.parquet", _set_first("modality", "rna")),
        "table.column.pattern",
        "tissues.parquet",
    ),
    Case(
        "label_encoder_missing",
        _remove(lambda r: CohortPaths(r).label_encoder(1.0, "cell_types")),
        "layout.file_missing",
        "label_encoder.parquet",
    ),
    Case("semantic_value_unknown", _rewrite_mask(_semantic, _unknown_category), "mask.values", "cell_types/"),
    Case("tissue_mask_not_binary", _rewrite_mask(_tissue_mask, _non_binary), "mask.values", "tissue_masks/"),
    Case(
        "standardization_table_missing",
        _remove(lambda r: _std_dir(r) / "global_level_stds.parquet"),
        "standardization.missing",
        "global_level_stds",
    ),
    Case(
        "tile_out_of_bounds",
        _edit_table("tiling/1_0mpp/default/128_tile_coordinates.parquet", _tile_out_of_bounds),
        "tiling.out_of_bounds",
        "tile_coordinates",
    ),
    Case(
        "unknown_tissue_in_cells",
        _edit_table("metadata/cells.parquet", _set_first("tissue_id", f"{DATASET}_zzzzzzzz_0009")),
        "ids.unknown_tissue",
        "cells.parquet",
    ),
    Case(
        "other_dataset_tissue_id",
        _edit_table("metadata/cells.parquet", _set_first("tissue_id", "other2020x_a1b2c3d4_0000")),
        "table.dataset.mismatch",
        "cells.parquet",
    ),
    Case(
        "patient_id_contradicts_tissue_id",
        _edit_table("metadata/tissues.parquet", _set_first("patient_id", "zzzzzzzz")),
        "table.tissue_id.parts",
        "tissues.parquet",
    ),
    Case("instance_mask_missing", _remove(_instance), "mask.missing", "instances/"),
    Case("image_missing", _remove(_image), "layout.file_missing", ".ome.zarr"),
    # --- readers never return data that contradicts the cohort's own metadata
    Case(
        "channels_rows_reordered",
        _edit_table("imc/channels.parquet", _swap_first_two_rows),
        "image.channel_labels",
        ".ome.zarr",
        reader_raises=True,
    ),
    Case("panel_reordered_in_every_table", _reorder_panel_everywhere, "image.channel_labels", ".ome.zarr", True),
    Case("he_channel_labels", _edit_he_ome(_he_labels), "image.channel_labels", "he/1_0mpp", True),
    Case("axis_unit_nanometer", _edit_ome(_axis_unit("nanometer")), "image.scale", ".ome.zarr", True),
    Case("axis_unit_unknown", _edit_ome(_axis_unit("furlong")), "image.scale", ".ome.zarr", True),
    Case("non_square_pixels", _edit_ome(_non_square), "image.scale", ".ome.zarr", True),
    Case("image_dtype_bool", _replace_level(lambda d: d > 0), "image.dtype", ".ome.zarr/0", True),
    Case("image_dtype_complex", _replace_level(lambda d: d.astype("complex64")), "image.dtype", ".ome.zarr/0", True),
    Case("omero_channels_not_a_list", _edit_ome(_omero_not_a_list), "image.ome_metadata", ".ome.zarr", True),
    Case("level_path_escape", _edit_ome(_level_path_escape), "image.ome_metadata", ".ome.zarr", True),
    # --- missing and corrupt chunks are errors, not zeros
    Case("all_shards_deleted", _delete_all_shards, "image.chunk_missing", ".ome.zarr/0", True),
    Case("shard_index_corrupt", _flip_byte(lambda n: n - 6), "image.truncated", ".ome.zarr/0/c/", True),
    Case("shard_grown", _append_garbage, "image.truncated", ".ome.zarr/0/c/", True),
    Case("shard_empty", _empty_shard, "image.truncated", ".ome.zarr/0/c/", True),
    Case("chunk_bit_flip", _flip_byte(lambda n: n // 3), "image.corrupt", ".ome.zarr/0/c/", True, deep=True),
    Case(
        "level_json_garbage", _garbage(lambda r: _image(r) / "0" / "zarr.json"), "image.unreadable", ".ome.zarr/0", True
    ),
    # --- no unbounded allocation from untrusted sizes
    Case("npz_header_huge", _huge_npz_header(_tissue_mask), "mask.too_large", "tissue_masks/", True),
    Case("instance_npz_header_huge", _huge_npz_header(_instance), "mask.too_large", "instances/", True),
    Case("image_header_huge", _edit_level_json(_huge_image), "image.too_large", ".ome.zarr/0", True),
    Case("image_too_many_channels", _edit_level_json(_many_channels), "image.too_large", ".ome.zarr/0", True),
    # --- every user-input failure is a SporaError with the file and the rule that is broken
    Case(
        "cell_id_float",
        _edit_table("metadata/cells.parquet", lambda d: d.assign(cell_id=d["cell_id"].astype("float64"))),
        "table.column.dtype",
        "cells.parquet",
        True,
    ),
    Case("level0_2d", _replace_level(lambda d: d[0]), "image.shape", ".ome.zarr/0", True),
    Case("level0_4d", _replace_level(lambda d: d[None]), "image.shape", ".ome.zarr/0", True),
    Case(
        "channels_table_missing",
        _remove(lambda r: CohortPaths(r).channels("imc")),
        "layout.file_missing",
        "channels.parquet",
        True,
    ),
    Case(
        "channels_per_tissue_missing",
        _remove(lambda r: CohortPaths(r).channels_per_tissue("imc")),
        "layout.file_missing",
        "channels_per_tissue.parquet",
        True,
    ),
    Case(
        "channels_per_tissue_duplicate_row",
        _edit_table("imc/channels_per_tissue.parquet", _duplicate_cpt_row),
        "table.key.duplicate",
        "channels_per_tissue.parquet",
        True,
    ),
    Case("truncated_npz_member", _truncated_npz_member(_instance), "mask.unreadable", "instances/", True),
    Case("truncated_npz_file", _cut_file(_tissue_mask), "mask.unreadable", "tissue_masks/", True),
    Case("mask_3d", _rewrite_mask(_instance, lambda m: m[None]), "mask.shape", "instances/", True),
    Case(
        "negative_cell_label",
        _rewrite_mask(_instance, _negative_label),
        "mask.labels_mismatch",
        "instances/",
        True,
        "mask.values",
    ),
    Case(
        "tissue_id_unicode_digit",
        _rename_tissue(lambda t: t[:-1] + "\u0663"),  # ARABIC-INDIC DIGIT THREE: \\d in Python, not [0-9]
        "table.column.pattern",
        "tissues.parquet",
        True,
    ),
    Case(
        "tissue_id_trailing_newline",
        _rename_tissue(lambda t: t + "\n"),
        "table.column.pattern",
        "tissues.parquet",
        True,
    ),
]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) + len(REMOTE_CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def broken(request: pytest.FixtureRequest, base_cohort: Path, tmp_path: Path) -> tuple[Path, Case]:
    case: Case = request.param
    root = tmp_path / DATASET
    shutil.copytree(base_cohort, root, symlinks=True)
    case.mutate(root)
    return root, case


def _compute(element: object) -> None:
    """Every pixel of a SpatialData image or labels element (every scale of a multiscale one)."""
    if hasattr(element, "children") and element.children:  # a DataTree: one dataset per scale
        for child in element.children.values():
            for variable in child.ds.data_vars.values():
                variable.data.compute()
    else:
        element.data.compute()  # type: ignore[attr-defined]


def _exercise_cohort(root: Path) -> None:
    """Use the Cohort API the way a user would, pixels included."""
    cohort = open_cohort(root)
    cohort.summary()
    for modality in cohort.modalities:
        for tid in cohort.tissue_ids(modality):
            cohort.image(tid, modality).shape  # noqa: B018 - metadata only
    for tid in cohort.tissue_ids("imc"):
        cohort.instance_mask(tid)
        cohort.tissue_mask(tid)
    cohort.cells()
    for modality in cohort.modalities:
        for tid in cohort.tissue_ids(modality):
            for level in cohort.image_levels(tid, modality):
                level.compute()


def _exercise_spatialdata(root: Path) -> None:
    """The whole cohort as SpatialData, every pixel computed."""
    sdata = spora_sd.to_spatialdata(root)
    for element in [*sdata.images.values(), *sdata.labels.values()]:
        _compute(element)


@pytest.mark.parametrize("broken", CASES, ids=[c.id for c in CASES], indirect=True)
def test_validator_reports_file_and_rule(broken: tuple[Path, Case]) -> None:
    root, case = broken
    report = spora_sd.validate(root, deep=case.deep)
    assert not report.ok, f"{case.id} was not detected"
    matching = [p for p in report.errors if p.rule == case.rule]
    assert matching, f"{case.id}: expected rule {case.rule}, got {[(p.rule, p.file) for p in report.problems]}"
    assert any(case.file in p.file for p in matching), [p.file for p in matching]
    assert all(p.message for p in report.problems)


@pytest.mark.parametrize("broken", CASES, ids=[c.id for c in CASES], indirect=True)
def test_reader_fails_cleanly(broken: tuple[Path, Case]) -> None:
    """Only spora-sd's own errors come out of the readers; a case marked reader_raises is refused."""
    root, case = broken
    raised: dict[str, SporaError] = {}
    for exercise in (_exercise_cohort, _exercise_spatialdata):
        try:
            exercise(root)
        except SporaError as exc:  # CohortFormatError, CohortNotFoundError, LayoutNameError
            assert str(root) in str(exc) or "Invalid" in str(exc), str(exc)
            raised[exercise.__name__] = exc
    if case.reader_raises:
        exc = raised.get("_exercise_spatialdata")
        assert exc is not None, f"{case.id}: to_spatialdata read a broken cohort instead of refusing it"
        if isinstance(exc, CohortFormatError):
            assert exc.rule == (case.reader_rule or case.rule), str(exc)


@pytest.mark.parametrize("broken", CASES[:8], ids=[c.id for c in CASES[:8]], indirect=True)
def test_cli_exit_code_and_json(broken: tuple[Path, Case]) -> None:
    root, case = broken
    result = CliRunner().invoke(app, ["validate", str(root), "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    assert case.rule in {p["rule"] for p in payload["problems"]}


def test_mutations_leave_the_base_untouched(base_cohort: Path) -> None:
    assert spora_sd.validate(base_cohort).ok
    assert not [n for n in os.listdir(base_cohort) if n.startswith(".")]


# --------------------------------------------------------------------------------------------------
# beyond the corpus: rescue reads, validation that goes on, sparse huge labels


def _copy(base_cohort: Path, tmp_path: Path) -> Path:
    root = tmp_path / DATASET
    shutil.copytree(base_cohort, root, symlinks=True)
    return root


def test_on_mismatch_warn_rescues_a_cohort_with_wrong_image_metadata(base_cohort: Path, tmp_path: Path) -> None:
    root = _copy(base_cohort, tmp_path)
    _edit_table("imc/channels.parquet", _swap_first_two_rows)(root)
    with pytest.raises(CohortFormatError, match=r"image\.channel_labels"):
        spora_sd.to_spatialdata(root, elements=("images",))
    with pytest.warns(UserWarning, match=r"image\.channel_labels"):
        sdata = spora_sd.to_spatialdata(root, elements=("images",), on_mismatch="warn")
    panel = pd.read_parquet(CohortPaths(root).channels("imc"))["channel_name"].tolist()
    image = sdata.images[f"{_first_tissue(root)}__imc"]
    assert list(image.coords["c"].values)[:2] == panel[:2]  # named as the tables say, as asked
    cohort = open_cohort(root, on_mismatch="warn")
    with pytest.warns(UserWarning):
        cohort.image(_first_tissue(root), "imc").compute()
    assert open_cohort(cohort, on_mismatch="raise").on_mismatch == "raise" and cohort.on_mismatch == "warn"
    with pytest.raises(SporaError, match="on_mismatch"):
        open_cohort(root, on_mismatch="ignore")  # type: ignore[arg-type]


def test_computed_intensities_follow_the_image_labels_never_the_row_order(base_cohort: Path, tmp_path: Path) -> None:
    """Intensities computed from the images (cells.parquet without them) are refused too when the
    panel order contradicts the images: they would be filed under the wrong channel."""
    root = _copy(base_cohort, tmp_path)
    panel = pd.read_parquet(CohortPaths(root).channels("imc"))["channel_name"].tolist()
    _edit_table("metadata/cells.parquet", lambda d: d.drop(columns=[c for c in panel if c in d.columns]))(root)
    assert spora_sd.validate(root).ok
    _reorder_panel_everywhere(root)
    with pytest.raises(CohortFormatError, match=r"image\.channel_labels"):
        spora_sd.to_spatialdata(root, elements=("tables",))
    with pytest.raises(CohortFormatError, match=r"image\.channel_labels"):
        spora_sd.compute_cell_intensities(root)


def test_validate_keeps_checking_after_a_file_fails(base_cohort: Path, tmp_path: Path) -> None:
    root = _copy(base_cohort, tmp_path)
    paths = CohortPaths(root)
    tissues = sorted(set(pd.read_parquet(paths.tissues)["tissue_id"].astype(str)))
    _huge_npz_header(lambda r: paths.tissue_mask(1.0, tissues[0]))(root)  # a MemoryError before
    _rewrite_mask(lambda r: paths.tissue_mask(1.0, tissues[1]), _non_binary)(root)
    _truncated_npz_member(lambda r: paths.instance_mask(1.0, tissues[2]))(root)
    _edit_level_json(_huge_image)(root)
    found = {(p.rule, Path(p.file).name) for p in spora_sd.validate(root).errors}
    assert ("mask.too_large", f"{tissues[0]}.npz") in found
    assert ("mask.values", f"{tissues[1]}.npz") in found
    assert ("mask.unreadable", f"{tissues[2]}.npz") in found
    assert ("image.too_large", "0") in found
    assert not [rule for rule, _ in found if rule == "check.failed"]


_SPARSE_LABELS = """
import resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # 4e9 float64 entries would be 32 GB
import spora_sd
from spora_sd.layout import CohortPaths

root, tid, old = sys.argv[1], sys.argv[2], int(sys.argv[3])
sdata = spora_sd.to_spatialdata(root, modalities=["imc"], elements=("tables",))
table = sdata.tables["cells"]
row = np.flatnonzero((table.obs["tissue_id"] == tid).to_numpy() & (table.obs["cell_id"] == 4_000_000_000).to_numpy())
assert len(row) == 1, row
mask = np.load(CohortPaths(root).instance_mask(1.0, tid))["mask"]
ys, xs = np.nonzero(mask == 4_000_000_000)
np.testing.assert_allclose(table.obsm["spatial"][row[0]], [xs.mean() + 0.5, ys.mean() + 0.5])
image = spora_sd.open_cohort(root).image(tid, "imc").compute()
expected = image[:, mask == 4_000_000_000].astype(np.float64).mean(axis=1)
np.testing.assert_allclose(table.X[row[0], : len(expected)], expected, rtol=1e-6)
print("ok")
"""


def test_a_huge_sparse_cell_label_costs_what_its_cells_cost(base_cohort: Path, tmp_path: Path) -> None:
    """A cell labelled 4,000,000,000 (consistent in the mask and cells.parquet) is valid; reading it
    must not size arrays by the label (that was 32 GB per array): run under a 6 GB address-space limit."""
    root = _copy(base_cohort, tmp_path)
    paths = CohortPaths(root)
    tid = _first_tissue(root)
    mask = np.load(paths.instance_mask(1.0, tid))["mask"].astype(np.uint32)
    old = int(mask.max())
    mask[mask == old] = 4_000_000_000
    np.savez_compressed(paths.instance_mask(1.0, tid), mask=mask)
    panel = pd.read_parquet(paths.channels("imc"))["channel_name"].tolist()

    def relabel(df: pd.DataFrame) -> pd.DataFrame:
        df = df.drop(columns=[c for c in panel if c in df.columns])  # intensities computed from the image
        hit = (df["tissue_id"].astype(str) == tid) & (df["cell_id"] == old)
        df["cell_id"] = df["cell_id"].astype("int64").where(~hit, 4_000_000_000)
        return df

    _edit_table("metadata/cells.parquet", relabel)(root)
    report = spora_sd.validate(root)
    assert report.ok, str(report)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SPARSE_LABELS), str(root), tid, str(old)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# remote cohorts: the same refusals over S3 (moto) and HTTP, for what only a server can do wrong


@dataclass
class RemoteCase:
    id: str
    key: str  # the object to alter, relative to the cohort (a tissue id placeholder: {tid})
    # "delete", "truncate" (keep the first half of its bytes), "lie" (HTTP: every HEAD says 1 KiB more), or
    # "delete_unconsolidated" (delete it from a copy whose image groups hold no consolidated metadata, as
    # other writers make them: with it, remote reads take a level's metadata from its group's zarr.json)
    action: str
    rule: str | None  # the validator's rule (None: the read is refused and validate reports check.failed)
    file: str  # a fragment of the reported file


REMOTE_CASES = [
    RemoteCase(
        "remote_deleted_shard",
        "imc/1_0mpp/images/{tid}.ome.zarr/0/c/0/0/0",
        "delete",
        "image.chunk_missing",
        ".ome.zarr/0",
    ),
    RemoteCase(
        "remote_deleted_level_metadata",
        "imc/1_0mpp/images/{tid}.ome.zarr/0/zarr.json",
        "delete_unconsolidated",
        "image.unreadable",
        ".ome.zarr",
    ),
    RemoteCase(
        "remote_deleted_table",
        "imc/channels_per_tissue.parquet",
        "delete",
        "layout.file_missing",
        "channels_per_tissue.parquet",
    ),
    RemoteCase(
        "remote_deleted_mask", "segmentations/1_0mpp/tissue_masks/{tid}.npz", "delete", "mask.missing", "tissue_masks"
    ),
    RemoteCase(
        "remote_truncated_shard", "imc/1_0mpp/images/{tid}.ome.zarr/0/c/0/0/0", "truncate", "image.truncated", "c/0/0/0"
    ),
    RemoteCase(
        "remote_truncated_mask",
        "segmentations/1_0mpp/cell_masks/instances/{tid}.npz",
        "truncate",
        "mask.unreadable",
        "instances",
    ),
    RemoteCase("remote_truncated_table", "metadata/cells.parquet", "truncate", "table.unreadable", "cells.parquet"),
    RemoteCase("remote_lying_sizes_table", "metadata/cells.parquet", "lie", "table.unreadable", "cells.parquet"),
    RemoteCase(
        "remote_lying_sizes_image", "imc/1_0mpp/images/{tid}.ome.zarr/0/c/0/0/0", "lie", "image.truncated", "c/0/0/0"
    ),
]


def _exercise_remote(url: str, options: dict | None) -> None:
    cohort = open_cohort(url, storage_options=options)
    cohort.summary()
    for tid in cohort.tissue_ids("imc"):
        cohort.instance_mask(tid)
        cohort.tissue_mask(tid)
        for level in cohort.image_levels(tid, "imc"):
            level.compute()
    cohort.cells()
    sdata = spora_sd.to_spatialdata(cohort)
    for element in [*sdata.images.values(), *sdata.labels.values()]:
        _compute(element)


@pytest.mark.parametrize("case", REMOTE_CASES, ids=[c.id for c in REMOTE_CASES])
def test_remote_bad_input_is_refused(case: RemoteCase, base_cohort: Path, s3_server, tmp_path: Path) -> None:
    """Deleted and truncated objects (S3) and a server that lies about sizes (HTTP): a SporaError naming
    the URL, never wrong data and never a third-party error; validate reports the file and the rule."""
    from servers import FaultProxy, HttpServer

    tid = open_cohort(base_cohort).tissue_ids("imc")[0]
    key = case.key.format(tid=tid)
    if case.action == "lie":
        shutil.copytree(base_cohort, tmp_path / DATASET)
        with HttpServer(tmp_path) as server, FaultProxy(server.url) as proxy:
            proxy.size_bonus = 1024
            url = f"{proxy.url}/{DATASET}"
            _check_remote_case(case, url, None)
        return
    prefix = f"badinput/{case.id}/{DATASET}"
    url = s3_server.upload_folder(base_cohort, prefix)
    if case.action == "delete_unconsolidated":
        group = key.rsplit("/", 2)[0] + "/zarr.json"
        meta = json.loads((base_cohort / group).read_text())
        del meta["consolidated_metadata"]
        s3_server.put(f"{prefix}/{group}", json.dumps(meta).encode())
    if case.action in ("delete", "delete_unconsolidated"):
        s3_server.delete(f"{prefix}/{key}")
    else:
        data = (base_cohort / key).read_bytes()
        s3_server.put(f"{prefix}/{key}", data[: len(data) // 2])
    _check_remote_case(case, url, s3_server.storage_options)


def _check_remote_case(case: RemoteCase, url: str, options: dict | None) -> None:
    with pytest.raises(SporaError) as info:
        _exercise_remote(url, options)
    assert url in str(info.value), str(info.value)
    report = spora_sd.validate(url, storage_options=options)
    assert not report.ok, f"{case.id} was not detected"
    matching = [p for p in report.errors if p.rule == case.rule]
    assert matching, f"{case.id}: expected rule {case.rule}, got {[(p.rule, p.file) for p in report.problems]}"
    assert any(case.file in p.file for p in matching), [p.file for p in matching]
