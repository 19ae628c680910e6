"""Generate documentation pages from the code's own data: JSON Schemas and rule ids."""

from __future__ import annotations

from pathlib import Path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def cli_reference() -> str:
    """Every command's ``--help``, rendered by click itself, so the page cannot drift from the CLI."""
    import click
    import typer
    import typer.core

    from spora_sd.cli.app import app

    typer.core.HAS_RICH = False  # plain click help text (rich would print to the terminal instead)
    root = typer.main.get_command(app)
    parts = ["# Command line\n", "Generated from the CLI's own help texts.\n"]

    def walk(cmd: click.Command, path: list[str]) -> None:
        ctx = click.Context(cmd, info_name=" ".join(path))
        parts.append(f"\n## `{' '.join(path)}`\n\n```text\n{cmd.get_help(ctx)}\n```\n")
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.list_commands(ctx)):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(root, ["spora-sd"])
    return "\n".join(parts)


def generate(out: Path) -> None:
    from spora_sd.layout.schemas import RULES as TABLE_RULES
    from spora_sd.layout.schemas import SCHEMA_KINDS, load_schema, schema_markdown
    from spora_sd.validation.validator import RULES as STRUCTURE_RULES

    parts = [
        "# Table schemas\n",
        "Generated from `schemas/<kind>.schema.json`, the files the validator applies. The two other files there "
        'are not tables: `spora_attrs.schema.json` describes `sdata.attrs["spora"]` '
        "(see {mod}`spora_sd.convert.attrs`), `manifest.schema.json` a cohort's content manifest "
        "`metadata/manifest.json` (see {mod}`spora_sd.io.manifest` and [the guarantees](../guarantees.md)).\n",
    ]
    for kind in SCHEMA_KINDS:
        schema = load_schema(kind)
        parts.append(f"\n## `{kind}`\n\n{schema.get('description', '')}\n\n{schema_markdown(kind)}\n")
    _write(out / "schemas.md", "\n".join(parts))
    rows = ["| rule id | meaning |", "| --- | --- |"]
    from spora_sd.importers import RULES as IMPORT_RULES
    from spora_sd.io.fetch import RULES as FETCH_RULES

    for rules in (STRUCTURE_RULES, TABLE_RULES, IMPORT_RULES, FETCH_RULES):
        rows += [f"| `{rule}` | {text} |" for rule, text in sorted(rules.items())]
    _write(out / "cli.md", cli_reference())
    _write(
        out / "rules.md",
        "# Validation rules\n\nEvery problem carries one of these stable ids.\n\n" + "\n".join(rows) + "\n",
    )
