"""The versioned ``sdata.attrs["spora"]`` format (spora_sd.convert.attrs): build, read, upgrade, refuse."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import spatialdata
from jsonschema import Draft202012Validator

import spora_sd
from spora_sd.convert import element_names
from spora_sd.convert.attrs import (
    ATTRS_KEY,
    FORMAT_VERSION,
    LEGACY_VERSION,
    ElementEntry,
    SporaAttrs,
    build_spora_attrs,
    parse_format_version,
    read_label_attrs,
    read_spora_attrs,
    upgrade_spora_attrs,
)
from spora_sd.convert.store import write_spatialdata
from spora_sd.errors import AttrsFormatError, AttrsVersionError, SporaError
from spora_sd.io.cohort import open_cohort
from spora_sd.layout.schemas import load_attrs_schema
from spora_sd.testing import assert_cohorts_equal

SRC = Path(spora_sd.__file__).resolve().parent
DATASET = "synthetic2025cohort"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.make_synthetic_cohort(tmp_path_factory.mktemp("attrs"), n_tissues=2, image_size=96, n_cells=20)


@pytest.fixture(scope="module")
def made(root: Path) -> spatialdata.SpatialData:
    return spora_sd.to_spatialdata(root)


@pytest.fixture
def sdata(made: spatialdata.SpatialData) -> spatialdata.SpatialData:
    """A SpatialData with the same elements and a deep copy of ``attrs`` (safe to change)."""
    return spatialdata.SpatialData(
        images=dict(made.images),
        labels=dict(made.labels),
        tables={name: table.copy() for name, table in made.tables.items()},
        attrs=copy.deepcopy(dict(made.attrs)),
    )


def _image(spora: dict) -> str:
    return sorted(n for n, e in spora["elements"].items() if e["kind"] == "image")[0]


# --------------------------------------------------------------------------------------------------
# writing and reading


def test_round_trip_to_spatialdata_attrs(made: spatialdata.SpatialData, root: Path) -> None:
    stored = made.attrs[ATTRS_KEY]
    assert stored["format_version"] == FORMAT_VERSION
    assert re.fullmatch(r"[0-9]+\.[0-9]+", FORMAT_VERSION)
    assert stored["spora_sd_version"] == spora_sd.__version__  # the package version, kept apart
    info = read_spora_attrs(made)
    assert isinstance(info, SporaAttrs) and info.upgraded_from is None
    assert info.to_dict() == stored
    assert SporaAttrs.from_dict(info.to_dict()) == info
    assert read_spora_attrs(dict(made.attrs)) == info  # the attrs mapping works too

    cohort = open_cohort(root)
    assert info.dataset == DATASET and info.modalities == ["he", "imc"]
    assert set(info.elements) == set(made.images) | set(made.labels)
    for name, entry in info.elements.items():
        assert isinstance(entry, ElementEntry)
        assert entry.kind == element_names.parse_element_name(name).kind
        assert (root / entry.file).exists()
    assert info.label_encoders == {"cell_types": cohort.label_encoder("cell_types", 1.0)}
    assert info.label_encoder("cell_types") == cohort.label_encoder("cell_types", 1.0)
    assert info.label_encoder("nope") is None
    assert [r["channel_name"] for r in info.channel_records("imc")] == cohort.panel("imc")
    assert info.channel_records("he") is None
    assert info.channels("imc").columns == list(cohort.channels("imc").columns)
    assert info.tissues.columns == list(cohort.tissues.columns) and info.tissue_metadata == "table"
    assert info.cells.columns == cohort.cell_columns and info.cell_intensities == {"imc": "table"}
    assert set(info.tables) == {"cells", "tissues"}
    assert info.derived is not None and info.derived["tiling"]

    # the typed builder gives back the same object
    rebuilt = build_spora_attrs(
        dataset=info.dataset,
        modalities=info.modalities,
        elements=info.elements,
        resolution=info.resolution,
        resolutions=info.resolutions,
        mask_resolution=info.mask_resolution,
        tissue_mask_resolution=info.tissue_mask_resolution,
        tables=info.tables,
        label_encoders=info.label_encoders,
        channels={"imc": info.channels("imc")},
        channels_per_tissue=info.channels_per_tissue,
        tissues=info.tissues,
        tissue_rows=info.n_tissue_rows,
        tissue_metadata=info.tissue_metadata,
        cells=info.cells,
        cell_intensities=info.cell_intensities,
        derived=info.derived,
        spora_sd_version=info.spora_sd_version,
    )
    assert rebuilt == info


def test_schema_validates_what_to_spatialdata_writes(made: spatialdata.SpatialData) -> None:
    schema = load_attrs_schema()
    assert schema["properties"]["format_version"]["pattern"] == "^[0-9]+\\.[0-9]+$"
    Draft202012Validator(schema).validate(made.attrs[ATTRS_KEY])
    label_schema = {**schema["$defs"]["label_attrs"], "$defs": schema["$defs"]}
    semantic = [n for n in made.labels if element_names.parse_element_name(n).kind == "semantic"]
    assert semantic
    for name in semantic:
        Draft202012Validator(label_schema).validate(made.labels[name].attrs[ATTRS_KEY])
        label = read_label_attrs(made.labels[name], name)
        assert label.task == "cell_types" and label.categories == made.attrs[ATTRS_KEY]["label_encoders"]["cell_types"]
    cells = next(n for n in made.labels if n.endswith("__cells"))
    assert read_label_attrs(made.labels[cells]) is None


def test_written_store_keeps_the_format_version(made: spatialdata.SpatialData, tmp_path: Path) -> None:
    store = write_spatialdata(made, tmp_path / "c.zarr")
    back = spatialdata.read_zarr(store)
    assert back.attrs[ATTRS_KEY]["format_version"] == FORMAT_VERSION
    assert read_spora_attrs(back) == read_spora_attrs(made)


def test_absent_attrs_read_as_none() -> None:
    assert read_spora_attrs(spatialdata.SpatialData()) is None
    assert read_spora_attrs({"dataset": "x"}) is None


# --------------------------------------------------------------------------------------------------
# versions


def test_newer_major_version_is_refused(sdata: spatialdata.SpatialData, tmp_path: Path) -> None:
    major = parse_format_version(FORMAT_VERSION)[0] + 1
    sdata.attrs[ATTRS_KEY]["format_version"] = f"{major}.0"
    with pytest.raises(AttrsVersionError) as caught:
        read_spora_attrs(sdata)
    message = str(caught.value)
    assert isinstance(caught.value, SporaError) and isinstance(caught.value, ValueError)
    assert f"format version {major}.0" in message and f"format {FORMAT_VERSION}" in message
    assert "upgrade spora-sd" in message
    assert caught.value.found == f"{major}.0" and caught.value.supported == FORMAT_VERSION

    # from_spatialdata, also from a written store: refused before anything is written
    store = write_spatialdata(sdata, tmp_path / "future.zarr")
    for obj in (sdata, spatialdata.read_zarr(store)):
        target = tmp_path / "out" / DATASET
        with pytest.raises(AttrsVersionError, match="upgrade spora-sd"):
            spora_sd.from_spatialdata(obj, target)
        assert not target.exists()


def test_newer_minor_version_is_read_and_its_new_keys_are_kept(sdata: spatialdata.SpatialData) -> None:
    major, minor = parse_format_version(FORMAT_VERSION)
    spora = sdata.attrs[ATTRS_KEY]
    spora["format_version"] = f"{major}.{minor + 3}"
    spora["added_in_a_minor_version"] = {"any": [1, 2]}
    spora["elements"][_image(spora)]["new_entry_key"] = True
    info = read_spora_attrs(sdata)
    assert info.format_version == f"{major}.{minor + 3}" and info.upgraded_from is None
    assert info.to_dict() == spora


def test_old_store_without_format_version_is_read_and_round_trips(
    sdata: spatialdata.SpatialData, made: spatialdata.SpatialData, root: Path, tmp_path: Path
) -> None:
    del sdata.attrs[ATTRS_KEY]["format_version"]
    old = copy.deepcopy(sdata.attrs[ATTRS_KEY])
    info = read_spora_attrs(sdata)
    assert info.upgraded_from == LEGACY_VERSION and info.format_version == FORMAT_VERSION
    assert info == read_spora_attrs(made)  # version 0 holds the same keys as 1.0
    assert sdata.attrs[ATTRS_KEY] == old  # reading does not change the object
    assert upgrade_spora_attrs(old) == made.attrs[ATTRS_KEY]

    store = write_spatialdata(sdata, tmp_path / "old.zarr")
    back = spatialdata.read_zarr(store)
    assert "format_version" not in back.attrs[ATTRS_KEY]
    copy_ = spora_sd.from_spatialdata(back, tmp_path / DATASET)
    assert_cohorts_equal(root, copy_)


# --------------------------------------------------------------------------------------------------
# malformed


def _set(path: list, value: object):
    def change(spora: dict) -> None:
        target = spora
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


IMAGE = object()  # stands for the name of the first image element
CASES = {
    "unknown kind": (["elements", IMAGE, "kind"], "picture", "is not one of"),
    "missing mpp": (["elements", IMAGE, "mpp"], KeyError, "required key is missing"),
    "image without modality": (["elements", IMAGE, "modality"], KeyError, "required key is missing"),
    "negative mpp": (["elements", IMAGE, "mpp"], -1.0, "must be > 0"),
    "dataset not a string": (["dataset"], 3, "must be of JSON type string, not number"),
    "no elements": (["elements"], KeyError, "required key is missing"),
    "elements a list": (["elements"], [], "must be of JSON type object, not array"),
    "records not a list": (["channels", "imc", "records"], "x", "must be of JSON type array"),
    "category value not an integer": (["label_encoders", "cell_types", "B cell"], "one", "type integer"),
    "table kind": (["tables", "cells", "kind"], "frame", "must be 'table'"),
    "bad version": (["format_version"], "v1", "must be a 'MAJOR.MINOR' string"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_attrs_name_the_key_path(case: str, sdata: spatialdata.SpatialData) -> None:
    path, value, words = CASES[case]
    spora = sdata.attrs[ATTRS_KEY]
    path = [_image(spora) if p is IMAGE else p for p in path]
    _set(path, value)(spora)
    expected = "sdata.attrs['spora']" + "".join(f"[{p!r}]" for p in path)
    with pytest.raises(AttrsFormatError) as caught:
        read_spora_attrs(sdata)
    assert isinstance(caught.value, SporaError) and isinstance(caught.value, ValueError)
    assert any(where == expected and words in message for where, message in caught.value.problems), (
        caught.value.problems
    )
    assert expected in str(caught.value)


def test_every_problem_in_one_error(sdata: spatialdata.SpatialData, tmp_path: Path) -> None:
    spora = sdata.attrs[ATTRS_KEY]
    image = _image(spora)
    spora["elements"][image]["kind"] = "picture"
    spora["dataset"] = None
    del spora["modalities"]
    with pytest.raises(AttrsFormatError) as caught:
        spora_sd.from_spatialdata(sdata, tmp_path / DATASET)
    assert [where for where, _ in caught.value.problems] == [
        "sdata.attrs['spora']['dataset']",
        f"sdata.attrs['spora']['elements'][{image!r}]['kind']",
        "sdata.attrs['spora']['modalities']",
    ]
    assert str(caught.value).startswith("sdata.attrs['spora'] is malformed (3 problems)")
    assert not (tmp_path / DATASET).exists()


def test_attrs_that_are_not_an_object(sdata: spatialdata.SpatialData) -> None:
    sdata.attrs[ATTRS_KEY] = "spora"
    with pytest.raises(AttrsFormatError, match=r"sdata.attrs\['spora'\]: must be a JSON object \(dict\), not str"):
        read_spora_attrs(sdata)


def test_malformed_label_attrs_name_the_key_path(made: spatialdata.SpatialData) -> None:
    name = next(n for n in made.labels if n.endswith("__cell_types"))
    element = made.labels[name].copy()
    element.attrs[ATTRS_KEY] = {"task": "cell_types", "categories": {"B cell": "one"}}
    with pytest.raises(AttrsFormatError, match=re.escape(f"labels {name!r}.attrs['spora']['categories']['B cell']")):
        read_label_attrs(element, name)


# --------------------------------------------------------------------------------------------------
# one owner


def _indexing(tree: ast.AST) -> list[str]:
    """Code that reads or writes ``attrs["spora"]`` by its key: ``x["spora"]``, ``x[ATTRS_KEY]``, ``x.get("spora")``."""

    def is_key(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value == ATTRS_KEY
        return (isinstance(node, ast.Name) and node.id == "ATTRS_KEY") or (
            isinstance(node, ast.Attribute) and node.attr == "ATTRS_KEY" and "TableModel" not in ast.unparse(node)
        )

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_key(node.slice):
            found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and is_key(node.args[0])
        ):
            found.append(ast.unparse(node))
    return found


def test_only_convert_attrs_indexes_into_attrs_spora() -> None:
    owner = SRC / "convert" / "attrs.py"
    assert _indexing(ast.parse(owner.read_text(encoding="utf-8")))  # the check sees the owner's own code
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if path != owner:
            found = _indexing(ast.parse(path.read_text(encoding="utf-8")))
            if found:
                offenders[str(path.relative_to(SRC))] = found
    assert offenders == {}, f"index sdata.attrs['spora'] only in spora_sd/convert/attrs.py: {offenders}"


@pytest.mark.parametrize(
    "code",
    [
        'x = sdata.attrs["spora"]["elements"]',
        "x = attrs[element_names.ATTRS_KEY]",
        "element.attrs[ATTRS_KEY] = {}",
        "x = getattr(sdata, 'attrs', {}).get('spora')",
    ],
)
def test_the_owner_check_catches_indexing(code: str) -> None:
    assert _indexing(ast.parse(code))


def test_the_owner_check_ignores_prose_and_other_keys() -> None:
    assert not _indexing(ast.parse('"""sdata.attrs["spora"]"""\nx = adata.uns[TableModel.ATTRS_KEY]\ny = a["b"]'))


# --------------------------------------------------------------------------------------------------
# the cheap check of the large maps, held to the schema

_GOOD_ENTRY = {"kind": "image", "file": "imc/1_0mpp/images/t.ome.zarr", "tissue_id": "t", "mpp": 1.0, "modality": "imc"}
_ENTRY_VALUES = {
    "kind": ["image", "cells", "tissue", "semantic", "picture", "", 1, None, ["image"]],
    "file": ["f", "", 3, None, ["f"]],
    "tissue_id": ["t", "", 2, None],
    "mpp": [1.0, 2, 0, 0.0, -1.0, float("nan"), float("inf"), True, "1", None],
    "modality": ["imc", "", 5, None],
    "task": ["cell_types", "", 5, None],
    "extra": ["anything"],
}


def _entries() -> list[object]:
    """The good entry with each key missing, or set to each of a few values, and a few non-objects."""
    out: list[object] = [None, [], "x", 1]
    for key, values in _ENTRY_VALUES.items():
        out.append({k: v for k, v in _GOOD_ENTRY.items() if k != key})
        out.extend({**_GOOD_ENTRY, key: v} for v in values)
        out.extend({**_GOOD_ENTRY, "kind": "semantic", key: v} for v in values)
    return out


@pytest.mark.parametrize("name", ["a__imc", ""])
def test_the_cheap_element_check_never_accepts_what_the_schema_refuses(name: str) -> None:
    from spora_sd.convert.attrs import ELEMENT_KINDS, _element_entry_ok

    schema = load_attrs_schema()
    assert schema["$defs"]["element"]["properties"]["kind"]["enum"] == list(ELEMENT_KINDS)
    validator = Draft202012Validator({"$defs": schema["$defs"], **schema["properties"]["elements"]})
    accepted = 0
    for entry in _entries():
        if _element_entry_ok(name, entry):
            accepted += 1
            assert validator.is_valid({name: entry}), entry
    assert accepted > 5 if name else accepted == 0


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        (["elements", -1, "mpp"], 0, "must be > 0"),
        (["elements", -1, "kind"], "picture", "is not one of"),
        (["channels_per_tissue", "imc", -1], ["DNA1", 3], "must be of JSON type string"),
    ],
)
def test_a_bad_entry_anywhere_in_a_large_map_is_found(
    sdata: spatialdata.SpatialData, where: list, value: object, words: str
) -> None:
    spora = sdata.attrs[ATTRS_KEY]
    target = spora[where[0]] if where[0] == "elements" else spora[where[0]][where[1]]
    last = list(target)[-1]  # not the first: the one the schema sees when the cheap check passes
    path = [where[0], last, where[2]] if where[0] == "elements" else where[:2] + [last]
    _set(path, value)(spora)
    with pytest.raises(AttrsFormatError) as caught:
        read_spora_attrs(sdata)
    expected = "sdata.attrs['spora']" + "".join(f"[{p!r}]" for p in path)
    assert any(w.startswith(expected) and words in m for w, m in caught.value.problems), caught.value.problems
