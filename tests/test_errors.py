"""spora-sd's exceptions: one module, all exported, all SporaError; user input never gives a bare builtin error."""

from __future__ import annotations

import inspect
from pathlib import Path

import pandas as pd
import pytest

import spora_sd
import spora_sd.errors as errors
from spora_sd.errors import (
    CohortFormatError,
    CohortNotFoundError,
    InvalidArgumentError,
    SporaError,
    TargetExistsError,
)

# --------------------------------------------------------------------------------------------------
# the classes


def test_every_error_is_a_spora_error_exported_from_spora_sd() -> None:
    assert "SporaError" in errors.__all__
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert inspect.isclass(cls) and issubclass(cls, SporaError), name
        assert name in spora_sd.__all__, name
        assert getattr(spora_sd, name) is cls, name


def test_every_exception_class_of_the_module_is_listed() -> None:
    defined = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, BaseException)}
    assert defined == set(errors.__all__)


def test_builtin_bases_are_kept() -> None:
    """``except ValueError`` / ``except FileExistsError`` in user code keeps working."""
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(TargetExistsError, FileExistsError)
    assert issubclass(CohortNotFoundError, FileNotFoundError)
    for name in ("CohortFormatError", "LayoutNameError", "ExportInputError", "MetadataError"):
        assert issubclass(getattr(errors, name), ValueError), name
    assert issubclass(errors.ArtifactNotFoundError, LookupError)
    assert issubclass(errors.TermNotFoundError, ValueError) and issubclass(errors.AmbiguousTermError, ValueError)


def test_moved_classes_are_the_same_objects_in_their_old_modules() -> None:
    import spora_sd.lamin
    from spora_sd.convert import plan

    assert plan.ExportInputError is errors.ExportInputError
    for name in ("MetadataError", "ArtifactNotFoundError", "TermNotFoundError", "AmbiguousTermError"):
        assert getattr(spora_sd.lamin, name) is getattr(errors, name), name


def test_export_input_error_lists_its_problems() -> None:
    one = errors.ExportInputError("image 'a': no channel names")
    assert one.problems == ["image 'a': no channel names"] and str(one) == "image 'a': no channel names"
    many = errors.ExportInputError(["first problem", "second problem"])
    assert many.problems == ["first problem", "second problem"]
    assert str(many).splitlines() == [
        "2 problems with the SpatialData to export:",
        "  - first problem",
        "  - second problem",
    ]


# --------------------------------------------------------------------------------------------------
# fixed cases: the error class, the bad value and the valid ones are named


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.make_synthetic_cohort(
        tmp_path_factory.mktemp("errors"), n_tissues=3, image_size=64, n_cells=8, n_channels=4, tiling=False
    )


def test_cohort_tissue_missing_from_channels_per_tissue(cohort_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / cohort_root.name
    shutil.copytree(cohort_root, root)
    cpt_file = root / "imc/channels_per_tissue.parquet"
    cpt = pd.read_parquet(cpt_file)
    tissue_ids = spora_sd.open_cohort(root).tissue_ids("imc")
    dropped = tissue_ids[0]
    if "tissue_id" in cpt.columns:
        cpt = cpt[cpt["tissue_id"] != dropped]
    else:
        cpt = cpt.drop(index=dropped)
    cpt.to_parquet(cpt_file)

    cohort = spora_sd.open_cohort(root)
    with pytest.raises(CohortFormatError) as caught:
        cohort.tissue_channels(dropped, "imc")
    assert caught.value.rule == "ids.inconsistent"
    assert caught.value.file == str(cpt_file) and dropped in str(caught.value)
    assert cohort.tissue_channels(tissue_ids[1], "imc")  # the others still work

    unknown = f"{cohort.dataset}_zzzzzzzz_0000"
    with pytest.raises(InvalidArgumentError) as caught:
        cohort.tissue_channels(unknown, "imc")
    assert unknown in str(caught.value) and tissue_ids[1] in str(caught.value)


def test_tile_dataset_unknown_channel(cohort_root: Path) -> None:
    from spora_sd.ml import TileDataset

    panel = spora_sd.open_cohort(cohort_root).panel("imc")
    with pytest.raises(InvalidArgumentError) as caught:
        TileDataset(cohort_root, tile_size=32, channels=[panel[0], "NOT_A_MARKER"], numpy=True)
    message = str(caught.value)
    assert "'NOT_A_MARKER'" in message and all(repr(c) in message for c in panel)
    with pytest.raises(InvalidArgumentError, match=r"channels='CD3E'.*'all', 'qc', 'uniprot'"):
        TileDataset(cohort_root, tile_size=32, channels="CD3E", numpy=True)


def test_tile_dataset_unknown_tissue(cohort_root: Path) -> None:
    from spora_sd.ml import TileDataset

    known = spora_sd.open_cohort(cohort_root).tissue_ids("imc")
    unknown = f"{cohort_root.name}_zzzzzzzz_0000"
    with pytest.raises(InvalidArgumentError) as caught:
        TileDataset(cohort_root, tile_size=32, tissues=[known[0], unknown], numpy=True)
    message = str(caught.value)
    assert unknown in message and all(t in message for t in known)


def test_tile_dataset_unknown_split_and_label(cohort_root: Path) -> None:
    from spora_sd.ml import TileDataset

    with pytest.raises(InvalidArgumentError, match=r"has split 'nosuchsplit'; the splits are \["):
        TileDataset(cohort_root, tile_size=32, split="nosuchsplit", numpy=True)
    with pytest.raises(InvalidArgumentError, match=r"labels=\['no_column'\].*columns: \[.*'tissue_id'"):
        TileDataset(cohort_root, tile_size=32, labels=["no_column"], numpy=True)


def test_compute_tiling_bad_strategy(cohort_root: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        spora_sd.compute_tiling(cohort_root, strategy="spiral")
    message = str(caught.value)
    assert "'spiral'" in message and "default" in message and "grid" in message
    with pytest.raises(InvalidArgumentError, match="min_tissue"):
        spora_sd.compute_tiling(cohort_root, min_tissue="half")  # type: ignore[arg-type]


def test_existing_targets(cohort_root: Path) -> None:
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        spora_sd.make_synthetic_cohort(cohort_root.parent, n_tissues=3)
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        spora_sd.compute_standardization(cohort_root, overwrite=False)


def test_cohort_image_level_out_of_range(cohort_root: Path) -> None:
    cohort = spora_sd.open_cohort(cohort_root)
    tissue_id = cohort.tissue_ids("imc")[0]
    with pytest.raises(InvalidArgumentError, match=r"level=7.*1 pyramid levels"):
        cohort.image(tissue_id, "imc", level=7)
