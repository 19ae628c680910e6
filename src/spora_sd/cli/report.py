"""``spora-sd report``: the static QC page of a cohort (a thin wrapper around :func:`spora_sd.write_qc_report`)."""

from __future__ import annotations

from typing import Annotated

import typer

from spora_sd.cli.errors import console, csv_list, handle_errors

__all__ = ["report"]


@handle_errors
def report(
    cohort: Annotated[str, typer.Argument(help="Cohort folder, dataset key or alias.")],
    out: Annotated[str, typer.Argument(help="The HTML page to write, e.g. qc.html.")],
    markers: Annotated[
        str | None,
        typer.Option(help="Comma-separated red,green,blue channels of the thumbnails; default e.g. PTPRC,KRT5,DNA1."),
    ] = None,
    size: Annotated[int, typer.Option(help="Longest side of a thumbnail, in pixels.")] = 160,
    cell_type_column: Annotated[str, typer.Option(help="Column of cells.parquet with the cell types.")] = "cell_type",
    validate: Annotated[bool, typer.Option(help="Validate the cohort and list the problems on the page.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing page.")] = True,
) -> None:
    """Write a self-contained QC page (HTML, no JavaScript): one row per tissue, marker distributions, validation.

    The page opens from disk in any browser; images are inlined, so it can be mailed or archived as is.

    → Python: ``spora_sd.write_qc_report(cohort, out)``
    """
    from spora_sd.qc.page import write_qc_report

    path = write_qc_report(
        cohort,
        out,
        markers=csv_list(markers) if markers else None,
        thumbnail_size=size,
        cell_type_column=cell_type_column,
        validate=validate,
        overwrite=overwrite,
        progress=True,
    )
    console.print(f"wrote {path}")
