"""Naming helpers of the spora layout: property tests and the documented examples."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spora_sd import layout
from spora_sd.errors import LayoutNameError

datasets = st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)
patients = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=8, max_size=8)
specimens = st.integers(min_value=0, max_value=9999)
positive_floats = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(("mpp", "name"), [(1.0, "1_0mpp"), (0.375, "0_375mpp"), (2, "2_0mpp"), (0.5, "0_5mpp")])
def test_resolution_examples(mpp: float, name: str) -> None:
    assert layout.format_resolution(mpp) == name
    assert layout.parse_resolution(name) == float(mpp)


@given(positive_floats)
def test_resolution_round_trip(mpp: float) -> None:
    try:
        name = layout.format_resolution(mpp)
    except LayoutNameError:
        assert "e" in repr(mpp)  # only floats Python prints in scientific notation are refused
        return
    assert layout.parse_resolution(name) == mpp
    assert name == repr(mpp).replace(".", "_") + "mpp"


@pytest.mark.parametrize("bad", ["1mpp", "1_00mpp", "01_0mpp", "1.0mpp", "1_0", "0_0mpp", "../1_0mpp", "", "1_0MPP"])
def test_resolution_refuses_non_canonical(bad: str) -> None:
    with pytest.raises(LayoutNameError):
        layout.parse_resolution(bad)
    assert not layout.is_resolution_name(bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "x", 1e-7])
def test_format_resolution_refuses(bad: object) -> None:
    with pytest.raises(LayoutNameError):
        layout.format_resolution(bad)  # type: ignore[arg-type]


@given(datasets, patients, specimens)
def test_tissue_id_round_trip(dataset: str, patient: str, specimen: int) -> None:
    tid = layout.compose_tissue_id(dataset, patient, specimen)
    parts = layout.parse_tissue_id(tid)
    assert parts == (dataset, patient, f"{specimen:04d}")
    assert str(parts) == tid
    assert layout.check_tissue_id(tid, dataset) == tid
    assert layout.is_tissue_id(tid)


@given(st.text(max_size=40))
def test_tissue_id_never_escapes(text: str) -> None:
    """Whatever string passes the check is a single, plain path component."""
    if layout.is_tissue_id(text):
        assert "/" not in text and "\\" not in text and ".." not in text
        assert Path(text).name == text
    else:
        with pytest.raises(LayoutNameError):
            layout.check_tissue_id(text)


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "jackson2020single_a1b2c3d4_0000/../x",
        "jackson2020single_a1b2c3d4_000",
        "jackson2020single_A1B2C3D4_0000",
        "Jackson2020single_a1b2c3d4_0000",
        "jackson2020single_a1b2c3d_0000",
        "jackson2020single__a1b2c3d4_0000",
        "",
    ],
)
def test_bad_tissue_ids(bad: str) -> None:
    with pytest.raises(LayoutNameError, match="tissue id"):
        layout.check_tissue_id(bad)
    with pytest.raises(LayoutNameError):
        layout.CohortPaths("/c").image("imc", 1.0, bad)


@pytest.mark.parametrize(
    "bad",
    [
        "jackson2020single_a1b2c3d4_000\u0663",  # ARABIC-INDIC DIGIT THREE: Python's \\d matches it
        "jackson2020single_a1b2c3d4_\uff10\uff10\uff10\uff10",  # FULLWIDTH DIGIT ZERO
        "jackson2020single_a1b2c3d4_0000\n",  # Python's $ matches before a final newline
    ],
)
def test_tissue_ids_are_ascii_and_whole(bad: str) -> None:
    """The reader, the writers and the JSON Schemas (Arrow's RE2) agree: digits are 0-9, nothing trails."""
    import pyarrow as pa
    import pyarrow.compute as pc

    assert not layout.is_tissue_id(bad)
    with pytest.raises(LayoutNameError):
        layout.check_tissue_id(bad)
    assert not pc.match_substring_regex(pa.array([bad]), layout.TISSUE_ID_RE.pattern)[0].as_py()
    with pytest.raises(LayoutNameError):
        layout.compose_tissue_id("jackson2020single", "a1b2c3d4", bad[-4:])


@pytest.mark.parametrize("bad", ["\u0661_0mpp", "1_0mpp\n", "1_\u0660mpp"])
def test_resolution_names_are_ascii_and_whole(bad: str) -> None:
    with pytest.raises(LayoutNameError):
        layout.parse_resolution(bad)


def test_tissue_id_of_other_dataset_is_refused() -> None:
    with pytest.raises(LayoutNameError, match="dataset key"):
        layout.check_tissue_id("other2020x_a1b2c3d4_0000", "jackson2020single")


@pytest.mark.parametrize("specimen", [-1, 10000, "12", "abcd", True])
def test_bad_specimen(specimen: object) -> None:
    with pytest.raises(LayoutNameError):
        layout.compose_tissue_id("d2020x", "a1b2c3d4", specimen)  # type: ignore[arg-type]


@given(st.text(max_size=20), st.text(max_size=10))
def test_patient_hash_shape(raw: str, dataset: str) -> None:
    h = layout.patient_hash(raw, dataset)
    assert layout.check_patient_id(h) == h
    assert h == layout.patient_hash(raw, dataset)  # deterministic


@pytest.mark.parametrize("modality", ["he", "imc", "codex", "cycif", "mibi", "ihc_CD3E", "ihc_HLA-DR"])
def test_good_modalities(modality: str) -> None:
    assert layout.check_modality(modality) == modality


@pytest.mark.parametrize("modality", ["HE", "ihc_", "ihc_../x", "ihc_CD3/E", "rna", "", "ihc_.x", "imc "])
def test_bad_modalities(modality: str) -> None:
    with pytest.raises(LayoutNameError, match="modality"):
        layout.check_modality(modality)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,10}", fullmatch=True))
def test_ihc_paths_stay_under_ihc(marker: str) -> None:
    p = layout.CohortPaths("/c").modality_dir(f"ihc_{marker}")
    assert p.parent == Path("/c/ihc")


def test_paths_of_the_tree() -> None:
    p = layout.CohortPaths("/data/d2020x")
    tid = "d2020x_a1b2c3d4_0001"
    assert p.dataset == "d2020x"
    assert p.tissues == Path("/data/d2020x/metadata/tissues.parquet")
    assert p.cells == Path("/data/d2020x/metadata/cells.parquet")
    assert p.channels("imc") == Path("/data/d2020x/imc/channels.parquet")
    assert p.channels_per_tissue("mibi") == Path("/data/d2020x/mibi/channels_per_tissue.parquet")
    assert p.image("he", 0.375, tid) == Path(f"/data/d2020x/he/0_375mpp/images/{tid}.ome.zarr")
    assert p.image("ihc_CD3E", 1.0, tid) == Path(f"/data/d2020x/ihc/ihc_CD3E/1_0mpp/images/{tid}.ome.zarr")
    assert p.standardization_dir("imc", 1.0, "quantile_clipping", "uq_0.99") == Path(
        "/data/d2020x/imc/1_0mpp/standardization/quantile_clipping/uq_0.99"
    )
    assert [c.name for c in p.standardization_candidates("imc", 1.0, "quantile_clipping", "uq_0.99_image")] == [
        "uq_0.99",
        "uq_0.99_image",
    ]
    assert p.tissue_mask(1.0, tid) == Path(f"/data/d2020x/segmentations/1_0mpp/tissue_masks/{tid}.npz")
    assert p.instance_mask(1.0, tid) == Path(f"/data/d2020x/segmentations/1_0mpp/cell_masks/instances/{tid}.npz")
    assert p.semantic_mask(1.0, "cell_types", tid) == Path(
        f"/data/d2020x/segmentations/1_0mpp/cell_masks/cell_types/{tid}.npz"
    )
    assert p.label_encoder(1.0, "cell_types").name == "label_encoder.parquet"
    assert p.tile_coordinates(1.0, "default", 256) == Path(
        "/data/d2020x/tiling/1_0mpp/default/256_tile_coordinates.parquet"
    )
    assert p.tile_stats(1.0, "grid", 128).name == "128_tile_stats.parquet"


@pytest.mark.parametrize("task", ["instances", "../x", "Cell_types", "a/b", ""])
def test_bad_tasks(task: str) -> None:
    with pytest.raises(LayoutNameError):
        layout.CohortPaths("/c").semantic_mask(1.0, task, "d2020x_a1b2c3d4_0000")


@pytest.mark.parametrize("bad", ["../x", "a/b", "UQ"])
def test_bad_standardization_names(bad: str) -> None:
    with pytest.raises(LayoutNameError):
        layout.CohortPaths("/c").standardization_dir("imc", 1.0, "quantile_clipping", bad)


def test_tile_filenames() -> None:
    assert layout.parse_tile_filename("256_tile_coordinates.parquet") == (256, "coordinates")
    assert layout.parse_tile_filename("64_tile_stats.parquet") == (64, "stats")
    with pytest.raises(LayoutNameError):
        layout.parse_tile_filename("x_tile_stats.parquet")
    with pytest.raises(LayoutNameError):
        layout.CohortPaths("/c").tile_stats(1.0, "default", 0)


# --------------------------------------------------------------------------------------------------
# standardization parameter folders

quantiles = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("upper", "lower", "name"),
    [(0.99, None, "uq_0.99"), (0.995, 0.01, "uq_0.995_lq_0.01"), (1, 0, "uq_1.0_lq_0.0"), (0.5, None, "uq_0.5")],
)
def test_standardization_param_examples(upper: float, lower: float | None, name: str) -> None:
    assert layout.format_standardization_param(upper, lower) == name
    assert layout.parse_standardization_param(name) == (float(upper), None if lower is None else float(lower))
    # spora-io's spelling of the same folder
    image = f"{name}{layout.STANDARDIZATION_IMAGE_SUFFIX}"
    assert layout.parse_standardization_param(image) == layout.parse_standardization_param(name)
    assert layout.standardization_param_spellings(name) == (name, image)
    assert layout.standardization_param_spellings(image) == (name, image)


@given(quantiles, st.one_of(st.none(), quantiles))
def test_standardization_param_round_trip(upper: float, lower: float | None) -> None:
    if lower is not None and not lower < upper:
        with pytest.raises(LayoutNameError):
            layout.format_standardization_param(upper, lower)
        return
    try:
        name = layout.format_standardization_param(upper, lower)
    except LayoutNameError:  # printed in scientific notation: no folder name
        assert "e" in repr(upper) or "e" in repr(lower)
        return
    assert layout.parse_standardization_param(name) == (upper, lower)
    assert layout.format_standardization_param(*layout.parse_standardization_param(name)) == name
    # every name it makes is a valid path component
    assert layout.CohortPaths("/c").standardization_dir("imc", 1.0, "quantile_clipping", name).name == name


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "uq_",
        "uq_0.99_",
        "uq_1.5",
        "uq_0.5_lq_0.7",
        "uq_0.5_lq_0.5",
        "uq_0.99_lq_",
        "uq_-0.1",
        "uq_0.9.9",
        "uq_1e-05",
        "UQ_0.99",
        "lq_0.01",
        "uq_0.99_images",
        "uq_0.99_image_image",
        "quantile_clipping/uq_0.99",
        None,
        0.99,
    ],
)
def test_parse_standardization_param_refuses(bad: object) -> None:
    with pytest.raises(LayoutNameError):
        layout.parse_standardization_param(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("upper", "lower"),
    [
        (1.5, None),
        (-0.1, None),
        (True, None),
        ("x", None),
        (None, None),
        (float("nan"), None),
        (1e-5, None),
        (0.5, 0.7),
        (0.5, 0.5),
        (0.99, -0.01),
    ],
)
def test_format_standardization_param_refuses(upper: object, lower: object) -> None:
    with pytest.raises(LayoutNameError):
        layout.format_standardization_param(upper, lower)  # type: ignore[arg-type]


def test_standardization_candidates_are_both_spellings() -> None:
    paths = layout.CohortPaths("/c")
    for param in ("uq_0.99", "uq_0.99_image"):
        found = paths.standardization_candidates("imc", 1.0, "quantile_clipping", param)
        assert [p.name for p in found] == ["uq_0.99", "uq_0.99_image"]


def test_vocabulary_is_exported() -> None:
    for name in (
        "HE_CHANNELS",
        "STANDARDIZATION_IMAGE_SUFFIX",
        "SPATIALDATA_IO_IMAGE_SUFFIX",
        "TABLE_SUFFIX",
        "DEFAULT_STANDARDIZATION_PARAM",
        "format_standardization_param",
        "parse_standardization_param",
        "standardization_param_spellings",
    ):
        assert name in layout.__all__ and hasattr(layout, name)
    assert layout.HE_CHANNELS == ("R", "G", "B")
    assert layout.parse_standardization_param(layout.DEFAULT_STANDARDIZATION_PARAM) == (0.99, None)


# --------------------------------------------------------------------------------------------------
# one place for every spelling: no module outside layout/ spells the spec itself

SRC = Path(__file__).resolve().parents[2] / "src" / "spora_sd"

#: Spellings of the spec that only layout/names.py may write (exact string constants).
SPELLINGS = {
    "metadata",
    "segmentations",
    "tissue_masks",
    "cell_masks",
    "tissues.parquet",
    "cells.parquet",
    "channels.parquet",
    "channels_per_tissue.parquet",
    "label_encoder.parquet",
    ".parquet",
    ".ome.zarr",
    ".npz",
    "_image",
}
#: Prefixes of spellings (standardization parameter folders).
PREFIXES = ("uq_", "_lq_")
#: (file, constant) pairs that are the same word but not the spec's spelling.
ALLOWED = {
    ("convert/plan_from_attrs.py", "metadata"),  # the key of a column in pyarrow's pandas metadata
    ("io/consolidated.py", "metadata"),  # the key of zarr's consolidated metadata entries in a zarr.json
}
#: Modules that spell another tool's folder layout, whose words happen to match the spec's
#: (ai4bmr-datasets' ``02_processed/metadata/*.parquet``).
FOREIGN_LAYOUTS = ("importers/ai4bmr.py", "importers/ai4bmr_layout.py", "importers/synthetic_ai4bmr.py")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _spellings_outside_layout(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("layout/") or rel in FOREIGN_LAYOUTS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                value = node.value
                if (value in SPELLINGS or value.startswith(PREFIXES)) and (rel, value) not in ALLOWED:
                    found.append(f"{rel}:{node.lineno}: {value!r}")
            elif isinstance(node, ast.List | ast.Tuple):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if values == ["R", "G", "B"]:
                    found.append(f"{rel}:{node.lineno}: the H&E channels (use layout.HE_CHANNELS)")
    return found


def test_spellings_of_the_spec_live_in_layout_only() -> None:
    found = _spellings_outside_layout(SRC)
    assert found == [], "spell these with spora_sd.layout's constants:\n" + "\n".join(found)


def test_the_spelling_check_sees_a_violation(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        '"""Docstrings may say metadata/tissues.parquet and uq_0.99."""\n'
        'A = "tissues.parquet"\n'
        'B = f"uq_{0.99}"\n'
        'C = ["R", "G", "B"]\n'
        "D = root / 'segmentations'\n"
    )
    found = _spellings_outside_layout(tmp_path)
    assert len(found) == 4 and all(f.startswith("m.py:") for f in found), found
