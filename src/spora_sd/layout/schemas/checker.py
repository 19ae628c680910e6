"""Apply a table's JSON Schema to a whole table, column by column.

:func:`check_table` checks a :class:`pandas.DataFrame` or :class:`pyarrow.Table` one *column* at a time with
vectorised Arrow kernels, never row by row: a cell table of millions of rows is checked in seconds. Per-value
checks (patterns, enums, dataset prefixes) run on the distinct values of a dictionary-encoded column and are
mapped back to rows, so a 6-million-row ``tissue_id`` column costs a few thousand regex matches.

Examples
--------
>>> import pandas as pd
>>> from spora_sd.layout.schemas import check_table
>>> df = pd.DataFrame({"channel_name": ["CD3E", "CD3E"], "qc_pass": [True, False]})
>>> [p.rule for p in check_table(df, "channels", "imc/channels.parquet")]
['table.key.duplicate']
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Hashable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from spora_sd.errors import CohortFormatError
from spora_sd.layout.schemas.loading import BOUNDS, cached_schema, is_nullable
from spora_sd.report import Problem, Severity

__all__ = ["check_table", "ensure_valid_table"]

logger = logging.getLogger(__name__)

_MAX_EXAMPLES = 5
# Below this length a string column is checked value by value; above it, it is dictionary-encoded first
# so that regexes run once per distinct value (tissue ids repeat millions of times in a cell table).
_ENCODE_MIN_ROWS = 4096
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_STRINGISH = ("string", "category-of-string")
_NUMERIC = ("integer", "unsignedinteger", "floating")


# --------------------------------------------------------------------------------------------------
# columns


def _dtype_family(arrow_type: pa.DataType) -> str:
    """The ``x-dtype`` family of an Arrow type (``"null"`` for an all-null column)."""
    if pa.types.is_dictionary(arrow_type):
        return f"category-of-{_dtype_family(arrow_type.value_type)}"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "string"
    if pa.types.is_signed_integer(arrow_type):
        return "integer"
    if pa.types.is_unsigned_integer(arrow_type):
        return "unsignedinteger"
    if pa.types.is_floating(arrow_type):
        return "floating"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


class _Column:
    """One column (or named index level) of the table under check.

    Values are converted to Arrow only when a check needs them, so a float intensity column that only has
    its dtype checked is never copied. ``data`` is None for a column of a Parquet file that was not loaded
    (its dtype comes from the file's schema).
    """

    def __init__(
        self,
        name: Hashable,
        position: int,
        data: pd.Series | pd.Index | pa.ChunkedArray | None,
        *,
        arrow_type: pa.DataType | None = None,
        in_index: bool = False,
    ) -> None:
        self.name = name
        self.position = position
        self.data = data
        self.in_index = in_index
        self._given_type = arrow_type

    @property
    def label(self) -> str:
        return f"index {self.name!r}" if self.in_index else f"column {self.name!r}"

    @property
    def loaded(self) -> bool:
        return self.data is not None

    @cached_property
    def _converted(self) -> tuple[pa.ChunkedArray | None, pa.DataType | None, str | None]:
        """Arrow values, the dtype they stand for, and why conversion failed (if it did)."""
        if self.data is None or isinstance(self.data, pa.ChunkedArray):
            return self.data, self._given_type, None
        try:
            encoded = _encode_object_strings(self.data)
            if encoded is not None:
                return encoded, pa.string(), None
            # from_pandas: NaN/None/pd.NA become nulls, exactly as DataFrame.to_parquet stores them.
            array = pa.array(self.data, from_pandas=True)
            return pa.chunked_array([array]), array.type, None
        except (pa.ArrowException, ValueError, TypeError) as exc:
            kinds = pd.api.types.infer_dtype(self.data, skipna=True)
            return None, None, f"values of mixed or unsupported types ({kinds}: {exc})"

    @property
    def conversion_error(self) -> str | None:
        if self._numpy_type is not None:  # plain numpy numbers always convert; do not copy them to find out
            return None
        return self._converted[2]

    @property
    def arrow(self) -> pa.ChunkedArray:
        array = self._converted[0]
        if array is None:  # callers check `loaded` and `conversion_error` first
            raise RuntimeError(f"{self.label} has no Arrow values")
        return array

    @cached_property
    def arrow_type(self) -> pa.DataType | None:
        """The Arrow type the column has (or would have in Parquet), without converting values if possible."""
        if self._given_type is not None:
            return self._given_type
        if self._numpy_type is not None:
            return self._numpy_type
        return self._converted[1]

    @cached_property
    def _numpy_type(self) -> pa.DataType | None:
        # numpy bool/int/float columns map to Arrow types directly, with no need to copy the values.
        dtype = getattr(self.data, "dtype", None)
        if isinstance(self.data, pd.Series | pd.Index) and isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            return pa.from_numpy_dtype(dtype)
        return None

    @property
    def family(self) -> str | None:
        return None if self.arrow_type is None else _dtype_family(self.arrow_type)

    @property
    def dtype_name(self) -> str:
        if isinstance(self.data, pd.Series | pd.Index):
            return str(self.data.dtype)
        return str(self.arrow_type)

    @cached_property
    def _chunks_for_values(self) -> list[pa.Array]:
        array = self.arrow
        if _dtype_family(array.type) == "string" and len(array) >= _ENCODE_MIN_ROWS:
            array = pc.dictionary_encode(array)
        return array.chunks

    def value_mask(self, flag: Callable[[pa.Array], pa.Array]) -> pa.ChunkedArray:
        """Per-row boolean mask of ``flag`` (a kernel over values), computed once per distinct value.

        Null rows are never flagged: missing values are the null check's business.
        """
        chunks = []
        for chunk in self._chunks_for_values:
            if isinstance(chunk, pa.DictionaryArray):
                chunks.append(pc.take(_flag_valid(flag, chunk.dictionary), chunk.indices))
            else:
                chunks.append(_flag_valid(flag, chunk))
        return pc.fill_null(pa.chunked_array(chunks, type=pa.bool_()), False)

    def examples(self, positions: np.ndarray) -> list[Any]:
        return self.arrow.take(pa.array(positions, type=pa.int64())).to_pylist()

    def codes(self) -> tuple[np.ndarray, int]:
        """Dense int64 codes of the values (equal values, equal codes; null is a value) and their count."""
        chunks = self._chunks_for_values
        if chunks and all(isinstance(c, pa.DictionaryArray) for c in chunks):
            array = pa.chunked_array(chunks)
            if len(chunks) > 1:  # one dictionary for all chunks, so that codes compare across chunks
                array = pa.table({"c": array}).unify_dictionaries().column(0)
            indices = pa.chunked_array([c.indices for c in array.chunks])
            codes = pc.fill_null(indices, -1).to_numpy().astype(np.int64) + 1
            return codes, len(array.chunks[0].dictionary) + 1 if array.chunks else 1
        array = pa.chunked_array(chunks, type=self.arrow.type)
        if _dtype_family(array.type) in ("integer", "unsignedinteger") and array.null_count == 0 and len(array):
            values = array.to_numpy().astype(np.int64, copy=False)
            low, high = int(values.min()), int(values.max())
            if high - low < 2**32:  # small range: the values themselves are dense enough codes
                return values - low, high - low + 1
        codes, uniques = pd.factorize(array.to_pandas(), use_na_sentinel=False)
        return codes.astype(np.int64, copy=False), len(uniques)


def _encode_object_strings(data: pd.Series | pd.Index) -> pa.ChunkedArray | None:
    """A long object column of strings as an Arrow dictionary array, or None if it is something else.

    Hashing the Python strings once (``pandas.factorize``) is faster than copying millions of them into
    Arrow, and the per-value checks want distinct values anyway.
    """
    if data.dtype != object or len(data) < _ENCODE_MIN_ROWS:
        return None
    codes, uniques = pd.factorize(data, use_na_sentinel=True)
    if pd.api.types.infer_dtype(uniques, skipna=False) not in ("string", "empty"):
        return None
    indices = pa.array(codes, mask=codes < 0)
    return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, pa.array(uniques, type=pa.string()))])


def _flag_valid(flag: Callable[[pa.Array], pa.Array], values: pa.Array) -> pa.Array:
    # Kernels such as is_in say False (not null) for a null value; a null must never be flagged.
    return pc.and_kleene(flag(values), pc.is_valid(values)) if values.null_count else flag(values)


class _Frame:
    """A table as columns plus named index levels, from pandas or Arrow, without copying values."""

    def __init__(self, columns: list[_Column], index: list[_Column], n_rows: int) -> None:
        self.columns = columns
        self.index = index
        self.n_rows = n_rows

    @classmethod
    def from_pandas(cls, df: pd.DataFrame) -> _Frame:
        columns = [_Column(name, i, df.iloc[:, i]) for i, name in enumerate(df.columns)]
        index = [
            _Column(name, -1, df.index.get_level_values(i), in_index=True)
            for i, name in enumerate(df.index.names)
            if name is not None
        ]
        return cls(columns, index, len(df))

    @classmethod
    def from_arrow(cls, table: pa.Table, file_schema: pa.Schema | None = None) -> _Frame:
        """Wrap an Arrow table; with ``file_schema``, columns absent from ``table`` count as not loaded."""
        schema = table.schema if file_schema is None else file_schema
        index_fields, range_indexes = _pandas_index(schema)
        columns: list[_Column] = []
        # pandas stores a RangeIndex as metadata only (no column); pandas 3 also makes one from set_index on
        # an evenly spaced integer column, so a named one is an index level like any other (one of the wrong
        # length is corrupt metadata, which the conversion to pandas reports)
        index = [_Column(r.name, -1, r, in_index=True) for r in range_indexes if len(r) == table.num_rows]
        for i, field in enumerate(schema):
            if file_schema is None:
                data: pa.ChunkedArray | None = table.column(i)
            else:
                j = table.schema.get_field_index(field.name)
                data = table.column(j) if j >= 0 else None
            if field.name in index_fields:
                name = index_fields[field.name]
                if name is not None:  # an unnamed index (``__index_level_0__``) carries no layout meaning
                    index.append(_Column(name, -1, data, arrow_type=field.type, in_index=True))
            else:
                columns.append(_Column(field.name, i, data, arrow_type=field.type))
        return cls(columns, index, table.num_rows)


def _pandas_index(schema: pa.Schema) -> tuple[dict[str, str | None], list[pd.RangeIndex]]:
    """The pandas index as the pandas metadata describes it.

    Returns the columns that pandas stored as the index (field name -> index name) and the named
    RangeIndex levels, which pandas stores as a ``{"kind": "range", ...}`` entry with no column.
    """
    # The metadata is JSON written by whoever made the file: take only what has the expected shape.
    try:
        meta = schema.pandas_metadata
    except (ValueError, TypeError):  # corrupt metadata: to_pandas will report it
        return {}, []
    if not isinstance(meta, dict):
        return {}, []
    columns, index_columns = meta.get("columns"), meta.get("index_columns")
    if not isinstance(columns, list) or not isinstance(index_columns, list):
        return {}, []
    names = {c.get("field_name"): c.get("name") for c in columns if isinstance(c, dict)}
    fields = {f: names.get(f) for f in index_columns if isinstance(f, str) and f in schema.names}
    ranges = []
    for entry in index_columns:
        if not isinstance(entry, dict) or entry.get("kind") != "range" or entry.get("name") is None:
            continue  # an unnamed RangeIndex (the default one) carries no layout meaning
        bounds = [entry.get(key) for key in ("start", "stop", "step")]
        if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) and bounds[2] != 0:
            ranges.append(pd.RangeIndex(*bounds, name=entry["name"]))
    return fields, ranges


# --------------------------------------------------------------------------------------------------
# the checker


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _positions(mask: pa.ChunkedArray) -> np.ndarray:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def _more(total: int, shown: int) -> str:
    return f", ... ({total - shown} more)" if total > shown else ""


def _key_codes(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """One int64 code per row for a multi-column key, equal exactly where all parts are equal."""
    key, cardinality = parts[0]
    for codes, count in parts[1:]:
        if cardinality * count >= 2**62:  # would overflow: renumber the key so far densely
            key, uniques = pd.factorize(key)
            cardinality = len(uniques)
        key = key * count + codes
        cardinality *= count
    return key


def _has_repeats(codes: np.ndarray) -> bool:
    ordered = np.sort(codes)
    return bool((ordered[1:] == ordered[:-1]).any())


class _Checker:
    """Collects the problems of one table against one schema."""

    def __init__(
        self,
        schema: dict[str, Any],
        file: str | Path,
        channels: Sequence[str] | None,
        dataset: str | None,
    ) -> None:
        self.schema = schema
        self.kind = schema["x-kind"]
        self.file = str(file)
        self.channels = None if channels is None else [str(c) for c in channels]
        self.dataset = dataset
        self.problems: list[Problem] = []
        self.broken: set[int] = set()  # ids of columns whose dtype is wrong: no value checks, no keys
        self.reported_missing: set[str] = set()  # required columns already reported by the index check

    def add(self, rule: str, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(self.file, rule, message, severity))

    # ---------------------------------------------------------------------------------------------
    def run(self, frame: _Frame) -> list[Problem]:
        named = self._check_names(frame.columns)
        if "x-positional" in self.schema:
            resolved, matched, others = self._resolve_positional(named)
        else:
            resolved, matched, others = self._resolve_by_name(named)
        self._check_index(frame, resolved)
        self._check_missing(resolved)
        self._check_rows(frame.n_rows)
        properties = self.schema["properties"]
        for name, column in resolved.items():
            self._check_column(column, properties[name])
        for column, spec in matched:
            self._check_column(column, spec)
        others = self._check_channels(others)
        self._check_others(others)
        for key in self.schema.get("x-unique", []):
            self._check_key(key, resolved, frame.n_rows)
        self._check_tissue_id_parts(resolved)
        return self.problems

    # names ----------------------------------------------------------------------------------------
    def _check_names(self, columns: list[_Column]) -> dict[str, _Column]:
        named: dict[str, _Column] = {}
        repeats: dict[str, int] = {}
        for column in columns:
            if not isinstance(column.name, str):
                self.add(
                    "table.column.name",
                    f"column {column.name!r} (position {column.position}) has a {type(column.name).__name__} "
                    "name; Parquet needs string column names",
                )
            elif column.name in named:
                repeats[column.name] = repeats.get(column.name, 1) + 1
            else:
                named[column.name] = column
        for name, times in repeats.items():
            self.add("table.column.duplicate", f"column {name!r} appears {times} times; column names must be unique")
        return named

    def _resolve_by_name(
        self, named: dict[str, _Column]
    ) -> tuple[dict[str, _Column], list[tuple[_Column, dict[str, Any]]], list[_Column]]:
        properties = self.schema["properties"]
        patterns = [(re.compile(p), spec) for p, spec in self.schema.get("patternProperties", {}).items()]
        resolved: dict[str, _Column] = {}
        matched: list[tuple[_Column, dict[str, Any]]] = []
        others: list[_Column] = []
        for name, column in named.items():
            if name in properties:
                resolved[name] = column
                continue
            spec = next((s for p, s in patterns if p.search(name)), None)
            if spec is not None:
                matched.append((column, spec))
            else:
                others.append(column)
        return resolved, matched, others

    def _resolve_positional(
        self, named: dict[str, _Column]
    ) -> tuple[dict[str, _Column], list[tuple[_Column, dict[str, Any]]], list[_Column]]:
        order: list[str] = self.schema["x-positional"]
        columns = list(named.values())
        resolved = dict(zip(order, columns, strict=False))
        for i, (prop, column) in enumerate(resolved.items(), start=1):
            if column.name != prop:
                # Only the position is fixed by the layout, but spora-io reads these columns by name.
                self.add(
                    "table.column.name",
                    f"column {i} is named {column.name!r}; the spora-io reader looks the {self.kind} columns up as "
                    f"{', '.join(map(repr, order))}, so name it {prop!r}",
                    "warning",
                )
        expected = ", ".join(f"{i}: {p}" for i, p in enumerate(order, start=1))
        for i, prop in enumerate(order[len(columns) :], start=len(columns) + 1):
            self.add(
                "table.column.missing",
                f"column {i} ({prop}) is missing: a {self.kind} table has {len(order)} columns ({expected})",
            )
        for column in columns[len(order) :]:
            self.add(
                "table.column.unexpected",
                f"column {column.name!r} (position {column.position + 1}) is not allowed: a {self.kind} table has "
                f"exactly {len(order)} columns ({expected})",
            )
        return resolved, [], []

    # index and rows -------------------------------------------------------------------------------
    def _check_index(self, frame: _Frame, resolved: dict[str, _Column]) -> None:
        index_name = self.schema.get("x-index")
        index_required = bool(self.schema.get("x-index-required", False))
        properties = self.schema["properties"]
        closed = self.schema.get("additionalProperties") is False
        index_column: _Column | None = None
        for level in frame.index:
            if level.name == index_name and index_column is None:
                index_column = level
            elif level.name in properties and level.name in resolved:
                self.add(
                    "table.index",
                    f"{level.name!r} is both the pandas index and a column; the {self.kind} table needs it as a "
                    "column only (write df.reset_index(drop=True))",
                )
            elif level.name in properties:
                self.add(
                    "table.index",
                    f"{level.name!r} is stored as the pandas index, but the {self.kind} table needs it as a column "
                    "(write df.reset_index())",
                )
            elif index_name is not None:
                self.add("table.index", f"the index is named {level.name!r}; expected {index_name!r}")
            elif closed:
                self.add(
                    "table.index",
                    f"unexpected index {level.name!r}: the {self.kind} table has no index (write it with "
                    "index=False or df.reset_index(drop=True))",
                )
        if index_name is None:
            self.reported_missing.update(level.name for level in frame.index if level.name in properties)
            return
        column = resolved.get(index_name)
        reader = "the spora-io reader looks rows up by it"
        if index_column is not None and column is not None:
            self.add("table.index", f"{index_name!r} is both the index and a column; keep only the index")
        elif index_column is None and column is not None and index_required:
            self.add(
                "table.index",
                f"{index_name!r} is a column, but the {self.kind} table needs it as the pandas index "
                f"(write df.set_index({index_name!r})): {reader}",
            )
        elif index_column is None and column is None and index_required:
            self.add(
                "table.index",
                f"the index must be named {index_name!r} and hold the tissue ids; found no index or column "
                f"named {index_name!r}",
            )
            self.reported_missing.add(index_name)
        if index_column is not None and column is None:
            resolved[index_name] = index_column

    def _check_missing(self, resolved: dict[str, _Column]) -> None:
        for name in self.schema.get("required", []):
            if name in self.schema["properties"] and name not in resolved and name not in self.reported_missing:
                where = " (as the index or a column)" if name == self.schema.get("x-index") else ""
                self.add("table.column.missing", f"required column {name!r} is missing{where}")

    def _check_rows(self, n_rows: int) -> None:
        rows = self.schema.get("x-rows", {})
        low, high = rows.get("minimum"), rows.get("maximum")
        if low is not None and n_rows < low or high is not None and n_rows > high:
            want = f"exactly {low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
            self.add("table.rows", f"the {self.kind} table has {n_rows} rows; expected {want}")

    # one column -----------------------------------------------------------------------------------
    def _check_column(self, column: _Column, spec: dict[str, Any]) -> None:
        allowed = spec.get("x-dtype", [])
        if column.conversion_error is not None:
            self.broken.add(id(column))
            self.add(
                "table.column.dtype",
                f"{column.label} cannot be stored as a typed Parquet column: it holds {column.conversion_error}; "
                f"expected {' or '.join(allowed)}",
            )
            return
        family = column.family
        if family != "null" and allowed and family not in allowed:
            self.broken.add(id(column))
            self.add(
                "table.column.dtype",
                f"{column.label} has dtype {column.dtype_name} ({family}); expected {' or '.join(allowed)}",
            )
            return
        if not column.loaded or family == "null":
            if family == "null" and column.loaded and not is_nullable(spec):
                self._check_nulls(column)
            return
        if not is_nullable(spec):
            self._check_nulls(column)
        severity: Severity = spec.get("x-severity", "error")
        if family in _STRINGISH:
            self._check_strings(column, spec, severity)
        if "enum" in spec:
            values = [v for v in spec["enum"] if v is not None]
            mask = column.value_mask(lambda v: pc.invert(pc.is_in(v, value_set=pa.array(values, type=v.type))))
            self._report(
                "table.column.enum", column, mask, f"not one of {', '.join(map(repr, spec['enum']))}", severity
            )
        if family in _NUMERIC:
            self._check_range(column, spec, severity)

    def _check_nulls(self, column: _Column) -> None:
        array = column.arrow
        if column.family == "floating":
            mask = pc.is_null(array, nan_is_null=True)
        elif array.null_count:
            mask = pc.is_null(array)
        else:
            return
        n = _count(mask)
        if n:
            shown = _positions(mask)[:_MAX_EXAMPLES]
            self.add(
                "table.column.null",
                f"{column.label} has {n} missing value(s) (null/NaN) at rows {', '.join(map(str, shown))}"
                f"{_more(n, len(shown))}; it may not be empty",
            )

    def _check_strings(self, column: _Column, spec: dict[str, Any], severity: Severity) -> None:
        pattern = spec.get("pattern")
        if pattern is not None:
            mask = column.value_mask(lambda v: pc.invert(pc.match_substring_regex(v, pattern)))
            self._report("table.column.pattern", column, mask, f"do not match the pattern {pattern!r}", severity)
        if spec.get("x-tissue-id") and self.dataset is not None:
            prefix = f"{self.dataset}_"

            def foreign(values: pa.Array) -> pa.Array:
                # Malformed ids are the pattern check's business; report each value once.
                wrong = pc.invert(pc.starts_with(values, prefix))
                return wrong if pattern is None else pc.and_(wrong, pc.match_substring_regex(values, pattern))

            mask = column.value_mask(foreign)
            self._report("table.dataset.mismatch", column, mask, f"are tissue ids that do not start with {prefix!r}")

    def _check_range(self, column: _Column, spec: dict[str, Any], severity: Severity) -> None:
        bounds = [(keyword, flag, word) for keyword, flag, word in BOUNDS if keyword in spec]
        if not bounds:
            return
        masks = [flag(column.arrow, spec[keyword]) for keyword, flag, _ in bounds]
        mask = functools.reduce(pc.or_kleene, masks)
        wanted = " and ".join(f"{word} {spec[keyword]}" for keyword, _, word in bounds)
        self._report("table.column.range", column, pc.fill_null(mask, False), f"are not {wanted}", severity)

    def _report(
        self, rule: str, column: _Column, mask: pa.ChunkedArray, what: str, severity: Severity = "error"
    ) -> None:
        n = _count(mask)
        if not n:
            return
        positions = _positions(mask)
        shown = positions[:_MAX_EXAMPLES]
        values = ", ".join(f"{_short(v)} (row {p})" for v, p in zip(column.examples(shown), shown, strict=True))
        self.add(rule, f"{column.label}: {n} value(s) {what}: {values}{_more(n, len(shown))}", severity)

    # columns the schema does not name -------------------------------------------------------------
    def _check_channels(self, others: list[_Column]) -> list[_Column]:
        """Check the channel columns among ``others``; return the columns that are not channel columns."""
        config = self.schema.get("x-channel-columns")
        if config is None:
            return others
        spec = {"x-dtype": config["x-dtype"], "x-nullable": config["x-nullable"]}
        exact = config["match"] == "exact"
        if self.channels is None:
            # Without the channel list, every unnamed column of an exact table is a channel column.
            channel_columns, rest = (others, []) if exact else ([], others)
        else:
            wanted = set(self.channels)
            channel_columns = [c for c in others if c.name in wanted]
            rest = [c for c in others if c.name not in wanted]
            self._compare_channels([c.name for c in others], exact)
            if exact:
                rest = []  # already reported as extra channels
        for column in channel_columns:
            self._check_column(column, spec)
        return rest

    def _compare_channels(self, present: list[str], exact: bool) -> None:
        channels = self.channels or []
        wanted, have = set(self.channels), set(present)
        missing = [c for c in channels if c not in have]
        if not exact:
            if missing and wanted & have:
                self.add(
                    "table.channels.mismatch",
                    f"intensity columns exist for {len(wanted & have)} of {len(wanted)} channels; missing: "
                    f"{', '.join(map(repr, missing))}",
                    "warning",
                )
            return
        extra = [c for c in present if c not in wanted]
        if missing:
            self.add(
                "table.channels.mismatch",
                f"{len(missing)} channel column(s) of channels.parquet are missing: {', '.join(map(repr, missing))}",
            )
        if extra:
            self.add(
                "table.channels.mismatch",
                f"{len(extra)} column(s) are not channels of channels.parquet: {', '.join(map(repr, extra))}",
            )
        if not missing and not extra and present != channels:
            i = next(i for i, (a, b) in enumerate(zip(present, channels, strict=True)) if a != b)
            self.add(
                "table.channels.mismatch",
                f"channel columns are not in channels.parquet order: position {i} holds {present[i]!r} where "
                f"channels.parquet has {channels[i]!r}",
            )

    def _check_others(self, others: list[_Column]) -> None:
        properties = self.schema["properties"]
        closed = self.schema.get("additionalProperties") is False
        for column in others:
            if closed:
                allowed = ", ".join(map(repr, properties))
                self.add(
                    "table.column.unexpected",
                    f"column {column.name!r} is not allowed in the {self.kind} table (columns: {allowed})",
                )
            elif not _SNAKE_CASE.match(column.name) and not self._maybe_channel(column):
                self.add(
                    "table.column.name",
                    f"column {column.name!r} is not lower-case snake_case (only channel names keep their HUGO "
                    "spelling)",
                    "warning",
                )

    def _maybe_channel(self, column: _Column) -> bool:
        # Without the channel list, a floating column of a table with optional channel columns may be one.
        config = self.schema.get("x-channel-columns")
        return config is not None and self.channels is None and column.family in config["x-dtype"]

    # keys -----------------------------------------------------------------------------------------
    def _check_key(self, key: list[str], resolved: dict[str, _Column], n_rows: int) -> None:
        columns = [resolved.get(name) for name in key]
        if n_rows < 2 or any(
            c is None or not c.loaded or id(c) in self.broken or c.conversion_error is not None for c in columns
        ):
            return
        codes = _key_codes([c.codes() for c in columns if c is not None])
        if not _has_repeats(codes):
            return
        # Slow path, only when duplicates exist: which rows repeat which keys.
        repeated = pd.Series(codes).duplicated(keep=False).to_numpy()
        positions = np.flatnonzero(repeated)
        extra = int(len(positions) - len(np.unique(codes[positions])))
        first = positions[:200]
        groups = pd.Series(first).groupby(codes[first], sort=False).agg(list).tolist()
        shown = []
        for rows in groups[:3]:
            rows = np.asarray(rows[:_MAX_EXAMPLES])
            value = ", ".join(_short(c.examples(rows[:1])[0]) for c in columns if c is not None)
            shown.append(f"({value}) at rows {', '.join(map(str, rows))}")
        self.add(
            "table.key.duplicate",
            f"{extra} row(s) repeat the key ({', '.join(key)}), which must be unique: {'; '.join(shown)}"
            f"{', ...' if len(groups) > len(shown) else ''}",
        )

    def _check_tissue_id_parts(self, resolved: dict[str, _Column]) -> None:
        parts = self.schema.get("x-tissue-id-parts")
        if not parts:
            return
        columns = [resolved.get(name) for name in ("tissue_id", *parts)]
        if any(c is None or not c.loaded or id(c) in self.broken or c.family == "null" for c in columns):
            return
        tissue, patient, specimen = (pc.cast(c.arrow, pa.string()) for c in columns)  # type: ignore[union-attr]
        well_formed = pc.match_substring_regex(tissue, self.schema["properties"]["tissue_id"]["pattern"])
        # A well-formed tissue id ends with '<8-char patient>_<4-digit specimen>': its last 13 characters.
        tail = pc.utf8_slice_codeunits(tissue, start=-13)
        expected = pc.binary_join_element_wise(patient, specimen, "_")
        mask = pc.fill_null(pc.and_kleene(well_formed, pc.not_equal(tail, expected)), False)
        n = _count(mask)
        if not n:
            return
        shown = _positions(mask)[:_MAX_EXAMPLES]
        take = pa.array(shown, type=pa.int64())
        examples = ", ".join(
            f"{t!r} with patient_id {p!r}, specimen_id {s!r} (row {r})"
            for t, p, s, r in zip(
                tissue.take(take).to_pylist(),
                patient.take(take).to_pylist(),
                specimen.take(take).to_pylist(),
                shown,
                strict=True,
            )
        )
        self.add(
            "table.tissue_id.parts",
            f"column 'tissue_id': {n} tissue id(s) are not '<dataset>_<{parts[0]}>_<{parts[1]}>' of their own "
            f"row: {examples}"
            f"{_more(n, len(shown))}",
        )


def check_table(
    table: pd.DataFrame | pa.Table,
    kind: str,
    file: str | Path,
    *,
    channels: Sequence[str] | None = None,
    dataset: str | None = None,
    file_schema: pa.Schema | None = None,
) -> list[Problem]:
    """Check a table against the schema of its kind, column by column.

    Every check is vectorised (pyarrow compute kernels over whole columns; per-value checks over the distinct
    values of a column); nothing loops over rows. All problems are collected, none raised.

    Parameters
    ----------
    table
        The table, as a DataFrame (named index levels count as columns) or an Arrow table (the pandas
        metadata tells which columns were the index).
    kind
        One of :data:`SCHEMA_KINDS`.
    file
        The file the table belongs to; it is named in every problem.
    channels
        The modality's channel list (``channels.parquet`` order). When given, the channel columns of
        ``channels_per_tissue`` and the standardization tables must equal it, in order, and the intensity
        columns of ``cells`` are recognised by it. Ignored by the other kinds.
    dataset
        The cohort's dataset key. When given, every tissue id must start with ``"<dataset>_"``.
    file_schema
        For an Arrow table read with a column selection: the whole file's schema (its footer), so that the
        names and dtypes of the columns that were not read are still checked.

    Returns
    -------
    list of Problem
        One per broken rule and column (rule ids in :data:`RULES`); empty if the table is valid.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    TypeError
        If ``table`` is neither a DataFrame nor an Arrow table.

    Examples
    --------
    >>> import pandas as pd
    >>> cpt = pd.DataFrame({"CD3E": [True], "KRT5": [1]},
    ...                    index=pd.Index(["jackson2020single_a1b2c3d4_0000"], name="tissue_id"))
    >>> for p in check_table(cpt, "channels_per_tissue", "imc/channels_per_tissue.parquet",
    ...                      channels=["CD3E", "KRT5"], dataset="jackson2020single"):
    ...     print(p.rule, "|", p.message)
    table.column.dtype | column 'KRT5' has dtype int64 (integer); expected boolean
    """
    schema = cached_schema(kind)
    if isinstance(table, pd.DataFrame):
        frame = _Frame.from_pandas(table)
    elif isinstance(table, pa.Table):
        frame = _Frame.from_arrow(table, file_schema)
    else:
        raise TypeError(f"check_table needs a pandas DataFrame or a pyarrow Table, not {type(table).__name__}")
    return _Checker(schema, file, channels, dataset).run(frame)


def ensure_valid_table(
    df: pd.DataFrame | pa.Table,
    kind: str,
    file: str | Path,
    *,
    channels: Sequence[str] | None = None,
    dataset: str | None = None,
) -> None:
    """Raise if ``df`` breaks the schema of ``kind``; writers call this before anything touches the disk.

    Warnings (e.g. a column name that is not snake_case) are logged, not raised.

    Parameters
    ----------
    df
        The table to be written.
    kind, file, channels, dataset
        As for :func:`check_table`.

    Raises
    ------
    CohortFormatError
        With the first error's rule id; the message lists every error.

    Examples
    --------
    >>> import pandas as pd
    >>> enc = pd.DataFrame({"name": ["T cell", "B cell"], "id": [1, 0]})
    >>> ensure_valid_table(enc, "label_encoder", "label_encoder.parquet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    spora_sd.errors.CohortFormatError: label_encoder.parquet: [table.column.range] column 'id': 1 value(s) ...
    """
    problems = check_table(df, kind, file, channels=channels, dataset=dataset)
    for problem in problems:
        if problem.severity == "warning":
            logger.warning("%s", problem)
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return
    message = errors[0].message
    if len(errors) > 1:
        message += f"\nAll {len(errors)} problems:\n" + "\n".join(str(p) for p in errors)
    raise CohortFormatError(file, errors[0].rule, message)
