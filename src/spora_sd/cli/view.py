"""``spora-sd view``: a cohort (or a registered artifact) in Vitessce, served on loopback.

:mod:`spora_sd.cli.app` mounts :func:`view`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from spora_sd.cli.errors import handle_errors
from spora_sd.errors import InvalidArgumentError

__all__ = ["view"]


@handle_errors
def view(
    cohort: Annotated[
        str | None, typer.Argument(help="Cohort folder, dataset key or alias (or use --artifact).", show_default=False)
    ] = None,
    tissue: Annotated[str | None, typer.Option(help="Tissue shown first (default: the first).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    artifact: Annotated[
        str | None, typer.Option(help="A registered cohort's uid or key (LaminDB) instead of COHORT.")
    ] = None,
    modality: Annotated[str | None, typer.Option(help="Modality to show (default: multiplex, else H&E).")] = None,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser.")] = True,
) -> None:
    """Show a cohort in Vitessce (image channels, cell outlines by cell type, cell sets, heatmap), offline.

    Starts a web server on 127.0.0.1 that serves the page, the local Vitessce bundle and the data, and
    prints its URL; Ctrl+C stops it.

    → Python: ``spora_sd.view(cohort, tissue=..., port=...)``
    """
    from spora_sd.cli.errors import err_console
    from spora_sd.viewer.launch import view as run_view

    if (cohort is None) == (artifact is None):
        raise InvalidArgumentError("give a COHORT or --artifact UID (one of them)")
    if artifact is not None:
        from spora_sd.viewer.artifact import artifact_cohort

        cohort = str(artifact_cohort(artifact))
    server = run_view(cohort, tissue=tissue, port=port, open_browser=open_browser, modality=modality, block=False)
    url = server.tissue_url(tissue) if tissue else server.url
    err_console.print(f"spora-sd view: {url}  (Ctrl+C stops)", highlight=False, soft_wrap=True)
    typer.echo(url)
    server.wait()
