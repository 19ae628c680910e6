"""The ``spora-sd`` command line: the Typer app, logging set-up, and where each command is mounted.

Commands live in :mod:`spora_sd.cli.cohort` (cohort files and conversions), :mod:`spora_sd.cli.lamin`
(LaminDB) and :mod:`spora_sd.cli.demo`; how they end (exit codes) is :mod:`spora_sd.cli.errors`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from spora_sd.cli import cohort, demo, importers, lamin
from spora_sd.cli import fetch as fetch_cli
from spora_sd.cli import report as report_cli
from spora_sd.cli import view as view_cli
from spora_sd.cli.errors import err_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="spora-sd",
    help="Spatial proteomics cohorts (spora layout) <-> SpatialData, LaminDB registration, validation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug; -vvv: other libraries too)."),
    ] = 0,
) -> None:
    # Our own progress at INFO (DEBUG with -vv); other libraries only speak up for warnings
    # (-vvv lets them log at INFO too).
    logging.basicConfig(
        level=logging.INFO if verbose >= 3 else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )
    logging.getLogger("spora_sd").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    # Third-party deprecation and future warnings go through logging, shown from -vvv on.
    logging.captureWarnings(True)
    # ome_zarr's reader warns about every labels element that spatialdata writes ("no parent found").
    logging.getLogger("ome_zarr").setLevel(logging.INFO if verbose >= 3 else logging.ERROR)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose >= 3 else logging.ERROR)


app.command()(cohort.validate)
app.command()(cohort.info)
app.command()(cohort.convert)
app.command("make-synthetic")(cohort.make_synthetic)
app.command()(demo.demo)
app.command()(cohort.export)
app.command()(cohort.standardize)
app.command()(cohort.tile)
app.command()(cohort.consolidate)
app.command("fetch")(fetch_cli.fetch)
# LaminDB: `spora-sd lamin init|register|search|load|export`, and the everyday commands at the top
# level too. (`export` at the top level stays the SpatialData-store command.)
app.add_typer(lamin.lamin_app, name="lamin")
app.add_typer(importers.import_app, name="import")
app.command("register")(lamin.register_cmd)
app.command("search")(lamin.search_cmd)
app.command("load")(lamin.load_cmd)
app.command("view")(view_cli.view)
app.command("report")(report_cli.report)


def main() -> None:
    """Entry point of the ``spora-sd`` script."""
    app()


if __name__ == "__main__":
    main()
