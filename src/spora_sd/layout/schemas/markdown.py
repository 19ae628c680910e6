"""Markdown descriptions of the table schemas, from which the docs' layout page is generated.

>>> print(schema_markdown("label_encoder").splitlines()[4])
| column | required | dtype | constraints | description |
"""

from __future__ import annotations

from typing import Any

from spora_sd.layout.schemas.loading import BOUNDS, cached_schema, is_nullable

__all__ = ["schema_markdown"]


def _md(text: str) -> str:
    """Escape Markdown text: ``|`` would split a table cell, ``<name>`` would be read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: object) -> str:
    """A code span that is safe inside a table cell (only ``|`` needs escaping there)."""
    escaped = str(text).replace("|", "\\|")
    return f"`{escaped}`"


def _constraints(spec: dict[str, Any]) -> str:
    parts = []
    if "pattern" in spec:
        parts.append(f"pattern {_code(spec['pattern'])}")
    if "enum" in spec:
        parts.append("one of " + ", ".join("null" if v is None else _code(v) for v in spec["enum"]))
    parts.extend(f"{_md(word)} {spec[keyword]}" for keyword, _, word in BOUNDS if keyword in spec)
    parts.append("may be null" if is_nullable(spec) else "not null")
    if spec.get("x-tissue-id"):
        parts.append(f"starts with {_code('<dataset>_')}")
    if spec.get("x-severity") == "warning":
        parts.append("violations are warnings")
    return "; ".join(parts)


def schema_markdown(kind: str) -> str:
    """A Markdown description of one table kind: a table of its columns, then its keys and policies.

    Used to generate the layout page of the documentation from the schemas, so the two cannot drift.

    Parameters
    ----------
    kind
        One of :data:`SCHEMA_KINDS`.

    Returns
    -------
    str
        Markdown text: a heading line, the description, a column table (column, required, dtype, constraints,
        description) and a list of table-level rules.

    Examples
    --------
    >>> print(schema_markdown("label_encoder").splitlines()[4])
    | column | required | dtype | constraints | description |
    """
    schema = cached_schema(kind)
    required = set(schema.get("required", []))
    positional = schema.get("x-positional")
    index_name = schema.get("x-index")
    lines = [
        f"#### {_code(kind)}: {_code(schema['x-file'])}",
        "",
        _md(schema["description"]),
        "",
        "| column | required | dtype | constraints | description |",
        "| --- | --- | --- | --- | --- |",
    ]

    def row(label: str, req: str, spec: dict[str, Any], description: str) -> None:
        dtype = ", ".join(spec.get("x-dtype", []))
        lines.append(f"| {label} | {req} | {dtype} | {_constraints(spec)} | {_md(description)} |")

    for name, spec in schema["properties"].items():
        label = _code(name)
        if positional:
            label = f"column {positional.index(name) + 1} ({_code(name)})"
        if name == index_name:
            label += " (index)" if schema.get("x-index-required") else " (index or column)"
        row(label, "yes" if name in required else "no", spec, spec.get("description", ""))
    for pattern, spec in schema.get("patternProperties", {}).items():
        row(f"columns matching {_code(pattern)}", "no", spec, spec.get("description", ""))
    channel_columns = schema.get("x-channel-columns")
    if channel_columns:
        exact = channel_columns["match"] == "exact"
        row(
            "`<channel>` (one per channel name)",
            "every channel, in `channels.parquet` order" if exact else "no",
            channel_columns,
            channel_columns.get("description", ""),
        )

    notes = []
    for key in schema.get("x-unique", []):
        notes.append(f"- Key: ({', '.join(map(_code, key))}) is unique.")
    rows = schema.get("x-rows", {})
    if rows:
        low, high = rows.get("minimum"), rows.get("maximum")
        notes.append(f"- Rows: exactly {low}." if low == high else f"- Rows: at least {low}.")
    if positional:
        notes.append("- Columns are identified by position; other names are a warning (spora-io reads them by name).")
    additional = schema.get("additionalProperties", True)
    if additional is False:
        notes.append("- No other column is allowed.")
    elif additional is True and not channel_columns:
        notes.append("- Other columns are allowed (lower-case snake_case names).")
    elif additional is True:
        notes.append("- Other columns are allowed.")
    if schema.get("x-tissue-id-parts"):
        a, b = schema["x-tissue-id-parts"]
        notes.append(f"- `tissue_id` equals `<dataset>_<{a}>_<{b}>` of its own row.")
    return "\n".join([*lines, "", *notes, ""])
