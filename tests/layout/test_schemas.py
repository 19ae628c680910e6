"""Tests of the table schemas and the column-wise checker (spora_sd.layout.schemas)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

from spora_sd.errors import CohortFormatError
from spora_sd.io.tables import read_table_checked
from spora_sd.layout import HE, MULTIPLEX_MODALITIES, compose_tissue_id, patient_hash
from spora_sd.layout.schemas import (
    ATTRS_SCHEMA_FILE,
    DTYPE_FAMILIES,
    MANIFEST_SCHEMA_FILE,
    RULES,
    SCHEMA_KINDS,
    check_table,
    ensure_valid_table,
    load_attrs_schema,
    load_manifest_schema,
    load_schema,
    schema_dir,
    schema_markdown,
)

DATASET = "jackson2020single"
CHANNELS = ["CD3E", "KRT5", "HLA-DR"]
PATIENTS = [patient_hash(raw, DATASET) for raw in ("P-001", "P-002")]
TIDS = [compose_tissue_id(DATASET, p, 0) for p in PATIENTS]
CONTEXT = {"channels": CHANNELS, "dataset": DATASET}


# --------------------------------------------------------------------------------------------------
# valid tables, one per kind


def tissues() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tissue_id": [TIDS[0], TIDS[0], TIDS[1]],
            "patient_id": [PATIENTS[0], PATIENTS[0], PATIENTS[1]],
            "specimen_id": ["0000", "0000", "0000"],
            "modality": ["imc", "he", "imc"],
            "alignment": ["exact", "exact", "no alignment"],
            "mpp_imc": [1.0, 1.0, 1.0],
            "mpp_he": [0.5, 0.5, np.nan],
            "split": ["train", "train", "test"],
            "grade": [1, 1, 3],
        }
    )


def cells() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tissue_id": [TIDS[0]] * 3 + [TIDS[1]] * 2,
            "cell_id": [1, 2, 3, 1, 2],
            "cell_type": pd.Categorical(["T cell", "tumor", None, "T cell", "stroma"]),
            "cell_category": ["immune", "epithelial", None, "immune", "stromal"],
            "CD3E": np.array([1.0, 0.0, 0.5, 2.0, np.nan], dtype=np.float32),
            "KRT5": [0.1, 3.0, 0.0, 0.0, 0.2],
            "HLA-DR": [0.0, 0.0, 0.0, 1.0, 1.0],
        }
    )


def channels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "channel_name": CHANNELS,
            "qc_pass": [True, True, False],
            "uniprot_id": ["P07766", "", None],
            "is_nuclear_marker": [False, False, False],
        }
    )


def channels_per_tissue() -> pd.DataFrame:
    return pd.DataFrame(
        {"CD3E": [True, True], "KRT5": [True, False], "HLA-DR": [False, True]},
        index=pd.Index(TIDS, name="tissue_id"),
    )


def standardization_image() -> pd.DataFrame:
    return pd.DataFrame(
        {"CD3E": [10.0, 12.0], "KRT5": [3.0, np.nan], "HLA-DR": [np.nan, 7.5]},
        index=pd.Index(TIDS, name="tissue_id"),
    )


def standardization_global() -> pd.DataFrame:
    return pd.DataFrame({"CD3E": [1.5], "KRT5": [0.2], "HLA-DR": [0.0]})


def tile_coordinates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tissue_id": [TIDS[0], TIDS[0], TIDS[1]],
            "tile_id": [0, 1, 0],
            "row": [0, 0, 256],
            "col": [0, 256, 512],
        }
    )


def tile_stats() -> pd.DataFrame:
    return pd.DataFrame(
        {"num_tiles": [2, 1], "coverage_ratio": [0.9, 1.0], "tile_size": [256, 256], "stop_reason": ["a", "b"]},
        index=pd.Index(TIDS, name="tissue_id"),
    )


def label_encoder() -> pd.DataFrame:
    return pd.DataFrame({"name": ["T cell", "tumor", "stroma"], "id": [1, 2, 3]})


VALID: dict[str, Callable[[], pd.DataFrame]] = {
    "tissues": tissues,
    "cells": cells,
    "channels": channels,
    "channels_per_tissue": channels_per_tissue,
    "standardization_image": standardization_image,
    "standardization_global": standardization_global,
    "tile_coordinates": tile_coordinates,
    "tile_stats": tile_stats,
    "label_encoder": label_encoder,
}


def as_arrow(df: pd.DataFrame) -> pa.Table:
    """The Arrow table that DataFrame.to_parquet would write (named index levels kept as index)."""
    return pa.Table.from_pandas(df)


def rules(problems) -> list[str]:
    return [p.rule for p in problems]


# --------------------------------------------------------------------------------------------------
# the schema files


def test_schema_files_are_the_kinds_and_valid_json_schema():
    files = sorted(p.name for p in schema_dir().glob("*.schema.json"))
    # every file is a table kind, except the schemas of sdata.attrs["spora"] and of metadata/manifest.json
    assert files == sorted([*(f"{kind}.schema.json" for kind in SCHEMA_KINDS), ATTRS_SCHEMA_FILE, MANIFEST_SCHEMA_FILE])
    for kind in SCHEMA_KINDS:
        schema = load_schema(kind)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["x-kind"] == kind
    attrs_schema = load_attrs_schema()
    Draft202012Validator.check_schema(attrs_schema)
    assert attrs_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "x-kind" not in attrs_schema and attrs_schema["$id"] and attrs_schema["title"]
    assert ATTRS_SCHEMA_FILE.removesuffix(".schema.json") not in SCHEMA_KINDS
    manifest_schema = load_manifest_schema()
    Draft202012Validator.check_schema(manifest_schema)
    assert manifest_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "x-kind" not in manifest_schema and manifest_schema["$id"] and manifest_schema["title"]
    assert MANIFEST_SCHEMA_FILE.removesuffix(".schema.json") not in SCHEMA_KINDS


def test_top_level_schemas_folder_is_a_relative_link_to_the_package_schemas():
    repo = Path(__file__).resolve().parents[2]
    link = repo / "schemas"
    assert link.is_symlink()
    assert not Path(link.readlink()).is_absolute()
    assert link.resolve() == (repo / "src/spora_sd/layout/schemas/json").resolve()
    # the package reads the same files, whether it runs from the source tree or an installed wheel
    assert sorted(p.name for p in link.glob("*.json")) == sorted(p.name for p in schema_dir().glob("*.json"))


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_schema_extension_keywords_are_consistent_and_documented(kind):
    schema = load_schema(kind)
    used = {k for k in schema if k.startswith("x-")}
    specs = [*schema["properties"].values(), *schema.get("patternProperties", {}).values()]
    if "x-channel-columns" in schema:
        specs.append(schema["x-channel-columns"])
        assert schema["x-channel-columns"]["match"] in ("exact", "subset")
    for spec in specs:
        used |= {k for k in spec if k.startswith("x-")}
        assert spec["x-dtype"] and set(spec["x-dtype"]) <= set(DTYPE_FAMILIES)
        if "type" in spec:  # x-nullable and JSON Schema's "null" type say the same
            types = [spec["type"]] if isinstance(spec["type"], str) else spec["type"]
            assert spec["x-nullable"] == ("null" in types)
    for keyword in used:
        assert f"{keyword} (" in schema["$comment"], f"{kind}: {keyword} is not documented in $comment"
    columns = set(schema["properties"]) | set(schema.get("x-positional", []))
    assert set(schema["required"]) <= columns
    for key in schema.get("x-unique", []):
        assert set(key) <= columns
    if "x-index" in schema:
        assert schema["x-index"] in schema["properties"]


def test_load_schema_returns_a_copy_and_refuses_unknown_kinds():
    schema = load_schema("cells")
    schema["required"].append("oops")
    assert "oops" not in load_schema("cells")["required"]
    with pytest.raises(ValueError, match="valid kinds: tissues, cells"):
        load_schema("cell")
    with pytest.raises(ValueError, match="Unknown table kind"):
        check_table(cells(), "nope", "x.parquet")


def test_patterns_agree_with_layout():
    props = load_schema("tissues")["properties"]
    tissue, modality, patient = (props[k]["pattern"] for k in ("tissue_id", "modality", "patient_id"))
    for tid in TIDS:
        assert re.search(tissue, tid)
    for bad in ("Jackson_a1b2c3d4_0000", "jackson_a1b2c3d_0000", "jackson_a1b2c3d4_000", "jackson_a1b2c3d4_0000/"):
        assert not re.search(tissue, bad)
    for good in (HE, *MULTIPLEX_MODALITIES, "ihc_CD3E", "ihc_HLA-DR"):
        assert re.search(modality, good)
    for bad in ("IMC", "ihc_", "ihc_../x", "rna"):
        assert not re.search(modality, bad)
    assert all(re.search(patient, p) for p in PATIENTS)


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_a_row_of_each_valid_table_validates_as_json(kind):
    # The schemas are plain JSON Schema for one row: a generic validator agrees with the column checker.
    df = VALID[kind]()
    if any(name is not None for name in df.index.names):
        df = df.reset_index()
    for row in json.loads(df.to_json(orient="records")):
        Draft202012Validator(load_schema(kind)).validate(row)


# --------------------------------------------------------------------------------------------------
# valid tables pass


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
@pytest.mark.parametrize("convert", [lambda df: df, as_arrow], ids=["pandas", "arrow"])
def test_valid_table_passes(kind, convert):
    assert check_table(convert(VALID[kind]()), kind, f"{kind}.parquet", **CONTEXT) == []
    assert check_table(convert(VALID[kind]()), kind, f"{kind}.parquet") == []


def test_valid_variants_pass():
    unimodal = tissues().iloc[[0, 2]].assign(alignment=None, tissue_id=lambda d: d.tissue_id.astype("category"))
    assert check_table(unimodal, "tissues", "t.parquet", dataset=DATASET) == []
    narrow = cells().astype({"cell_id": np.uint32, "KRT5": np.float32})
    assert check_table(narrow, "cells", "c.parquet", **CONTEXT) == []
    large = as_arrow(cells()).cast(
        pa.schema(
            [f.with_type(pa.large_string()) if f.name == "cell_category" else f for f in as_arrow(cells()).schema]
        )
    )
    assert check_table(large, "cells", "c.parquet", **CONTEXT) == []
    assert check_table(tile_stats().reset_index(), "tile_stats", "s.parquet", dataset=DATASET) == []


# --------------------------------------------------------------------------------------------------
# each rule, from a mutated valid table


def _set(df: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    df = df.copy()
    df[column] = df[column].astype(object)
    df.iloc[row, df.columns.get_loc(column)] = value
    return df


# (id, kind, mutation, rule, text the message must contain, pandas only)
MUTATIONS: list[tuple[str, str, Callable[[pd.DataFrame], pd.DataFrame], str, str, bool]] = [
    ("missing", "tissues", lambda d: d.drop(columns="patient_id"), "table.column.missing", "'patient_id'", False),
    ("missing-index", "standardization_image", lambda d: d.reset_index(drop=True), "table.index", "'tissue_id'", False),
    ("dtype", "cells", lambda d: d.astype({"cell_id": float}), "table.column.dtype", "'cell_id'", False),
    (
        "dtype-int-channel",
        "channels_per_tissue",
        lambda d: d.astype({"KRT5": int}),
        "table.column.dtype",
        "'KRT5'",
        False,
    ),
    ("dtype-mixed", "channels", lambda d: _set(d, "qc_pass", 1, "yes"), "table.column.dtype", "'qc_pass'", True),
    ("dtype-specimen-int", "tissues", lambda d: d.assign(specimen_id=0), "table.column.dtype", "'specimen_id'", False),
    ("null", "channels", lambda d: _set(d, "channel_name", 1, None), "table.column.null", "'channel_name'", False),
    (
        "null-nan",
        "tile_stats",
        lambda d: d.assign(coverage_ratio=[np.nan, 1.0]),
        "table.column.null",
        "'coverage_ratio'",
        False,
    ),
    ("null-channel", "channels_per_tissue", lambda d: _set(d, "CD3E", 0, None), "table.column.null", "'CD3E'", False),
    ("pattern", "tissues", lambda d: _set(d, "modality", 2, "IMC"), "table.column.pattern", "'modality'", False),
    (
        "pattern-space",
        "label_encoder",
        lambda d: _set(d, "name", 0, "T cell "),
        "table.column.pattern",
        "'name'",
        False,
    ),
    ("enum", "tissues", lambda d: _set(d, "alignment", 1, "aligned"), "table.column.enum", "'alignment'", False),
    (
        "range",
        "cells",
        lambda d: _set(d, "cell_id", 4, 0).astype({"cell_id": int}),
        "table.column.range",
        "'cell_id'",
        False,
    ),
    (
        "range-max",
        "tile_stats",
        lambda d: d.assign(coverage_ratio=[0.5, 1.5]),
        "table.column.range",
        "'coverage_ratio'",
        False,
    ),
    ("range-mpp", "tissues", lambda d: d.assign(mpp_imc=[1.0, 1.0, 0.0]), "table.column.range", "'mpp_imc'", False),
    ("range-negative", "tile_coordinates", lambda d: d.assign(row=[0, -1, 256]), "table.column.range", "'row'", False),
    (
        "duplicate-key",
        "cells",
        lambda d: d.assign(cell_id=[1, 2, 2, 1, 2]),
        "table.key.duplicate",
        "(tissue_id, cell_id)",
        False,
    ),
    (
        "duplicate-tissue",
        "tissues",
        lambda d: d.assign(modality="imc"),
        "table.key.duplicate",
        "(tissue_id, modality)",
        False,
    ),
    (
        "duplicate-name",
        "channels",
        lambda d: d.assign(channel_name=["CD3E", "KRT5", "CD3E"]),
        "table.key.duplicate",
        "'CD3E'",
        False,
    ),
    ("duplicate-value", "label_encoder", lambda d: d.assign(id=[1, 2, 2]), "table.key.duplicate", "(id)", False),
    ("index-as-column", "channels_per_tissue", lambda d: d.reset_index(), "table.index", "'tissue_id'", False),
    ("index-multi", "cells", lambda d: d.set_index(["tissue_id", "cell_id"]), "table.index", "'tissue_id'", False),
    ("index-tissues", "tissues", lambda d: d.set_index("tissue_id"), "table.index", "'tissue_id'", False),
    ("index-renamed", "channels_per_tissue", lambda d: d.rename_axis("image"), "table.index", "'image'", False),
    (
        "index-closed",
        "tile_coordinates",
        lambda d: d.set_index("col", drop=False).rename_axis("pos"),
        "table.index",
        "'pos'",
        False,
    ),
    # a named RangeIndex: Arrow keeps it as pandas metadata only, with no column
    ("index-range", "tile_coordinates", lambda d: d.rename_axis("pos"), "table.index", "'pos'", False),
    ("index-both", "tile_stats", lambda d: d.assign(tissue_id=d.index), "table.index", "'tissue_id'", False),
    (
        "index-and-column",
        "tissues",
        lambda d: d.set_index("tissue_id", drop=False),
        "table.index",
        "both the pandas index and a column",
        True,
    ),
    ("rows", "standardization_global", lambda d: pd.concat([d, d]), "table.rows", "2 rows", False),
    ("rows-empty", "channels", lambda d: d.iloc[:0], "table.rows", "0 rows", False),
    (
        "channels-missing",
        "channels_per_tissue",
        lambda d: d.drop(columns="KRT5"),
        "table.channels.mismatch",
        "'KRT5'",
        False,
    ),
    (
        "channels-extra",
        "standardization_image",
        lambda d: d.assign(CD8A=1.0),
        "table.channels.mismatch",
        "'CD8A'",
        False,
    ),
    (
        "channels-order",
        "standardization_global",
        lambda d: d[["KRT5", "CD3E", "HLA-DR"]],
        "table.channels.mismatch",
        "'KRT5'",
        False,
    ),
    (
        "dataset",
        "tile_coordinates",
        lambda d: _set(d, "tissue_id", 2, "keren2018structured_a1b2c3d4_0000"),
        "table.dataset.mismatch",
        "'tissue_id'",
        False,
    ),
    (
        "parts",
        "tissues",
        lambda d: d.assign(specimen_id=["0000", "0000", "0001"]),
        "table.tissue_id.parts",
        "'tissue_id'",
        False,
    ),
    ("unexpected", "tile_coordinates", lambda d: d.assign(score=1.0), "table.column.unexpected", "'score'", False),
    (
        "unexpected-positional",
        "label_encoder",
        lambda d: d.assign(color="red"),
        "table.column.unexpected",
        "'color'",
        False,
    ),
    ("missing-positional", "label_encoder", lambda d: d[["name"]], "table.column.missing", "(id)", False),
    (
        "duplicate-column",
        "channels",
        lambda d: pd.concat([d, d[["qc_pass"]]], axis=1),
        "table.column.duplicate",
        "'qc_pass'",
        True,
    ),
    ("name-not-string", "tissues", lambda d: d.rename(columns={"grade": 7}), "table.column.name", "7", True),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "rule", "text", "convert"),
    [
        pytest.param(kind, mutate, rule, text, convert, id=f"{case}-{how}")
        for case, kind, mutate, rule, text, pandas_only in MUTATIONS
        for how, convert in (("pandas", lambda df: df), ("arrow", as_arrow))
        if not (pandas_only and how == "arrow")
    ],
)
def test_each_mutation_breaks_exactly_its_rule(kind, mutate, rule, text, convert):
    table = convert(mutate(VALID[kind]()))
    problems = check_table(table, kind, f"out/{kind}.parquet", **CONTEXT)
    assert problems, "the mutation was not noticed"
    assert set(rules(problems)) == {rule}, [str(p) for p in problems]
    assert all(p.severity == "error" and p.file == f"out/{kind}.parquet" for p in problems)
    assert any(text in p.message for p in problems), [p.message for p in problems]
    assert rule in RULES


def test_every_rule_is_exercised_and_documented():
    exercised = {m[3] for m in MUTATIONS} | {"table.unreadable"}
    assert exercised == set(RULES)
    assert all(rule.startswith("table.") and text for rule, text in RULES.items())


def test_messages_count_and_locate_offending_values():
    df = cells()
    df["tissue_id"] = df["tissue_id"].astype(object)
    df.loc[[1, 3], "tissue_id"] = ["bad id", "bad id"]
    (problem,) = check_table(df, "cells", "c.parquet")
    assert problem.rule == "table.column.pattern"
    assert "column 'tissue_id': 2 value(s)" in problem.message
    assert "'bad id' (row 1), 'bad id' (row 3)" in problem.message


def test_long_object_string_column_reports_right_rows():
    # >= 4096 rows takes the factorize/dictionary path; positions must still be row numbers.
    n = 5000
    df = pd.DataFrame({"tissue_id": [TIDS[0]] * n, "cell_id": np.arange(1, n + 1)})
    df.loc[4321, "tissue_id"] = "x"
    df.loc[4999, "tissue_id"] = None
    problems = check_table(df, "cells", "c.parquet", dataset=DATASET)
    assert rules(problems) == ["table.column.null", "table.column.pattern"]
    assert "rows 4999" in problems[0].message
    assert "'x' (row 4321)" in problems[1].message
    dup = df.assign(tissue_id=TIDS[0], cell_id=np.r_[np.arange(1, n), 7])
    (problem,) = check_table(dup, "cells", "c.parquet")
    assert problem.rule == "table.key.duplicate"
    assert "rows 6, 4999" in problem.message and "1 row(s)" in problem.message


def test_channel_checks_without_and_with_a_channel_list():
    # Without the channel list every unnamed column of channels_per_tissue is a channel column.
    cpt = channels_per_tissue().assign(note="x")
    assert rules(check_table(cpt, "channels_per_tissue", "c.parquet")) == ["table.column.dtype"]
    # Cells: intensity columns are optional, but partial intensities are worth a warning.
    partial = cells().drop(columns="KRT5")
    (problem,) = check_table(partial, "cells", "c.parquet", **CONTEXT)
    assert (problem.rule, problem.severity) == ("table.channels.mismatch", "warning")
    assert "'KRT5'" in problem.message
    assert check_table(cells().drop(columns=CHANNELS), "cells", "c.parquet", **CONTEXT) == []
    wrong = cells().assign(KRT5=[1, 2, 3, 4, 5])
    assert rules(check_table(wrong, "cells", "c.parquet", **CONTEXT)) == ["table.column.dtype"]


def test_warnings_for_names_and_uniprot_ids():
    named = tissues().rename(columns={"grade": "Grade"})
    (problem,) = check_table(named, "tissues", "t.parquet")
    assert (problem.rule, problem.severity) == ("table.column.name", "warning")
    assert "'Grade'" in problem.message
    renamed = label_encoder().rename(columns={"name": "category", "id": "value"})
    problems = check_table(renamed, "label_encoder", "l.parquet")
    assert rules(problems) == ["table.column.name"] * 2 and {p.severity for p in problems} == {"warning"}
    assert "'category'" in problems[0].message and "'value'" in problems[1].message
    odd = _set(channels(), "uniprot_id", 2, "CD3 epsilon")
    (problem,) = check_table(odd, "channels", "c.parquet")
    assert (problem.rule, problem.severity) == ("table.column.pattern", "warning")


def test_duplicate_column_names_in_arrow_table():
    table = pa.Table.from_arrays([pa.array(CHANNELS), pa.array(CHANNELS)], names=["channel_name", "channel_name"])
    assert rules(check_table(table, "channels", "c.parquet")) == ["table.column.duplicate"]


def test_check_table_refuses_other_objects():
    with pytest.raises(TypeError, match="DataFrame or a pyarrow Table"):
        check_table(cells().to_dict(), "cells", "c.parquet")


# --------------------------------------------------------------------------------------------------
# reading Parquet files


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_read_table_checked_round_trip(tmp_path, kind):
    path = tmp_path / f"{kind}.parquet"
    VALID[kind]().to_parquet(path)
    df, problems = read_table_checked(path, kind, **CONTEXT)
    assert problems == []
    pd.testing.assert_frame_equal(df, VALID[kind](), check_dtype=False, check_categorical=False)


def test_read_table_checked_reports_file_problems(tmp_path):
    path = tmp_path / "channels_per_tissue.parquet"
    channels_per_tissue().to_parquet(path, index=False)  # the index is lost: the reader's .loc breaks
    df, problems = read_table_checked(path, "channels_per_tissue", **CONTEXT)
    assert df is not None
    assert rules(problems) == ["table.index"] and problems[0].file == str(path)


def test_read_table_checked_column_selection(tmp_path):
    path = tmp_path / "cells.parquet"
    cells().to_parquet(path)
    df, problems = read_table_checked(path, "cells", columns=["cell_type"], **CONTEXT)
    assert problems == []
    assert list(df.columns) == ["tissue_id", "cell_id", "cell_type"]
    # Names and dtypes of columns that were not read are still checked, from the file's footer.
    cells().astype({"KRT5": int}).drop(columns="cell_id").to_parquet(path)
    df, problems = read_table_checked(path, "cells", columns=["cell_type"], **CONTEXT)
    assert sorted(rules(problems)) == ["table.column.dtype", "table.column.missing"]


def test_unreadable_files_are_problems_not_tracebacks(tmp_path):
    good = tmp_path / "good.parquet"
    tissues().to_parquet(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.parquet"
    text.write_text("tissue_id,patient_id\nx,y\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    for path in (truncated, text, empty, folder, tmp_path / "missing.parquet"):
        df, problems = read_table_checked(path, "tissues")
        assert df is None
        assert rules(problems) == ["table.unreadable"]
        assert problems[0].file == str(path) and "tissues table" in problems[0].message


@pytest.mark.parametrize("metadata", [b'{"index_columns": ["nope"], "columns": 3}', b"{not json"])
def test_corrupt_pandas_metadata_is_unreadable(tmp_path, metadata):
    table = as_arrow(channels_per_tissue()).replace_schema_metadata({b"pandas": metadata})
    path = tmp_path / "cpt.parquet"
    pq.write_table(table, path)
    df, problems = read_table_checked(path, "channels_per_tissue", **CONTEXT)
    assert df is None
    assert rules(problems)[-1] == "table.unreadable"
    assert "pandas metadata" in problems[-1].message


# --------------------------------------------------------------------------------------------------
# writers' guard and docs


def test_ensure_valid_table(caplog):
    ensure_valid_table(channels_per_tissue(), "channels_per_tissue", "cpt.parquet", **CONTEXT)
    bad = cells().assign(cell_id=[1, 2, 2, 1, 0])
    with pytest.raises(CohortFormatError) as info:
        ensure_valid_table(bad, "cells", "metadata/cells.parquet", **CONTEXT)
    assert info.value.rule == "table.column.range"
    assert info.value.file == "metadata/cells.parquet"
    assert "All 2 problems" in info.value.message and "table.key.duplicate" in info.value.message
    with caplog.at_level(logging.WARNING, logger="spora_sd.layout.schemas"):
        ensure_valid_table(tissues().rename(columns={"grade": "Grade"}), "tissues", "t.parquet")
    assert "table.column.name" in caplog.text


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_schema_markdown(kind):
    text = schema_markdown(kind)
    schema = load_schema(kind)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| column | required | dtype | constraints | description |"
    cells_per_row = {len(re.split(r"(?<!\\)\|", line)) for line in table}
    assert cells_per_row == {7}, "an unescaped | split a cell"
    for name in schema["properties"]:
        assert f"`{name}`" in text
    prose = re.sub(r"`[^`]*`", "", text)
    assert "<" not in prose.replace("&lt;", ""), "raw <...> would be read as HTML"
