"""The ``export``, ``standardize`` and ``tile`` commands: results, exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SpatialData Zarr store converted from a small synthetic cohort."""
    from spora_sd.convert.store import write_spatialdata

    root = spora_sd.make_synthetic_cohort(
        tmp_path_factory.mktemp("c"), name="cli2025export", n_tissues=2, image_size=80, n_cells=8, n_channels=4
    )
    return write_spatialdata(spora_sd.to_spatialdata(root), tmp_path_factory.mktemp("z") / "c.zarr")


def test_export(store: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(store), str(tmp_path / "cli2025export")])
    assert result.exit_code == 0, result.output
    assert spora_sd.validate(tmp_path / "cli2025export").ok
    # --dataset with a root folder: the cohort goes to OUT/<dataset>
    result = runner.invoke(app, ["export", str(store), str(tmp_path), "--dataset", "other2025x", "--no-tiling"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other2025x/metadata/tissues.parquet").is_file()
    assert not (tmp_path / "other2025x/tiling").exists()


def test_export_errors_are_one_line(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "cli2025export"
    assert runner.invoke(app, ["export", str(store), str(target)]).exit_code == 0
    again = runner.invoke(app, ["export", str(store), str(target)])
    assert again.exit_code == 1 and "overwrite" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["export", str(store), str(tmp_path / "Bad-Name")])
    assert bad.exit_code == 1 and "--dataset" in bad.output and "Traceback" not in bad.output
    assert runner.invoke(app, ["export", str(tmp_path / "missing.zarr"), str(target)]).exit_code == 2


def test_standardize_and_tile(store: Path, tmp_path: Path) -> None:
    root = tmp_path / "cli2025export"
    args = ["export", str(store), str(root), "--no-standardization", "--no-tiling"]
    assert runner.invoke(app, args).exit_code == 0
    assert not (root / "imc/1_0mpp/standardization").exists()

    result = runner.invoke(app, ["standardize", str(root), "--methods", "quantile_clipping", "--upper-quantile", "0.9"])
    assert result.exit_code == 0, result.output
    folder = root / "imc/1_0mpp/standardization/quantile_clipping/uq_0.9"
    assert (folder / "image_level_upper_quantiles.parquet").is_file()

    result = runner.invoke(app, ["tile", str(root), "--tile-size", "32", "--strategy", "grid", "--min-tissue", "0"])
    assert result.exit_code == 0, result.output
    coords = pd.read_parquet(root / "tiling/1_0mpp/grid/32_tile_coordinates.parquet")
    assert len(coords) > 0 and spora_sd.validate(root).ok

    bad = runner.invoke(app, ["tile", str(root), "--strategy", "spiral"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
