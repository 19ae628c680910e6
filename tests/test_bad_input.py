"""The bad-input corpus: broken cohorts made by mutating a valid one.

Each case must be refused by the validator with its file and a stable rule id, and neither the
reader nor the validator (nor the CLI) may crash with a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
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
from spora_sd.errors import SporaError
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
]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def broken(request: pytest.FixtureRequest, base_cohort: Path, tmp_path: Path) -> tuple[Path, Case]:
    case: Case = request.param
    root = tmp_path / DATASET
    shutil.copytree(base_cohort, root, symlinks=True)
    case.mutate(root)
    return root, case


def _exercise_reader(root: Path) -> None:
    """Use the reader the way a user would; only spora-sd's own errors may come out."""
    cohort = open_cohort(root)
    cohort.summary()
    for modality in cohort.modalities:
        for tid in cohort.tissue_ids(modality):
            cohort.image(tid, modality).shape  # noqa: B018 - metadata only
    for tid in cohort.tissue_ids("imc"):
        cohort.instance_mask(tid)
        cohort.tissue_mask(tid)
    cohort.cells()


@pytest.mark.parametrize("broken", CASES, ids=[c.id for c in CASES], indirect=True)
def test_validator_reports_file_and_rule(broken: tuple[Path, Case]) -> None:
    root, case = broken
    report = spora_sd.validate(root)
    assert not report.ok, f"{case.id} was not detected"
    matching = [p for p in report.errors if p.rule == case.rule]
    assert matching, f"{case.id}: expected rule {case.rule}, got {[(p.rule, p.file) for p in report.problems]}"
    assert any(case.file in p.file for p in matching), [p.file for p in matching]
    assert all(p.message for p in report.problems)


@pytest.mark.parametrize("broken", CASES, ids=[c.id for c in CASES], indirect=True)
def test_reader_fails_cleanly(broken: tuple[Path, Case]) -> None:
    root, _ = broken
    try:
        _exercise_reader(root)
    except SporaError as exc:  # CohortFormatError, CohortNotFoundError, LayoutNameError
        assert str(root) in str(exc) or "Invalid" in str(exc), str(exc)


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
