"""``spora-sd fetch``: a partial, verified, resumable local copy of a remote cohort.

A thin wrapper around :func:`spora_sd.io.fetch.fetch`; :mod:`spora_sd.cli.app` mounts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spora_sd.cli.errors import console, csv_list, handle_errors

__all__ = ["fetch"]


@handle_errors
def fetch(
    cohort: Annotated[
        str,
        typer.Argument(
            help="s3://bucket/prefix/<dataset>, https://.../<dataset>, an rclone remote:bucket/path, "
            "a local folder, or a dataset key or alias (read from the spora bucket)."
        ),
    ],
    dest: Annotated[
        Path | None,
        typer.Argument(help="Local cohort folder to create or complete; default $SPORA_DATASETS_DIR/<dataset>."),
    ] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated modalities (default: all).")] = None,
    resolution: Annotated[
        str | None, typer.Option(help="Comma-separated resolutions in mpp, e.g. 1.0 (default: all).")
    ] = None,
    tissues: Annotated[str | None, typer.Option(help="Comma-separated tissue ids (default: all).")] = None,
    masks: Annotated[
        str | None,
        typer.Option(help="Comma-separated masks: tissue, instances, semantic task names, all (default) or none."),
    ] = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            help="KEY=VALUE passed to the remote filesystem (repeatable; dotted keys nest, "
            "e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Files downloaded at the same time.", min=1)] = 8,
) -> None:
    """Copy a cohort, or part of it, verified file by file; a rerun resumes an interrupted copy.

    → Python: ``spora_sd.fetch(cohort, dest, modalities=..., resolution=..., tissues=..., masks=...)``
    """
    from spora_sd.errors import InvalidArgumentError
    from spora_sd.io.fetch import fetch as run_fetch
    from spora_sd.io.location import parse_storage_options

    resolutions = None
    if resolution:
        try:
            resolutions = [float(r) for r in csv_list(resolution) or ()]
        except ValueError:
            raise InvalidArgumentError(f"--resolution {resolution!r}: expected numbers, e.g. 1.0 or 0.5,1.0") from None
    result = run_fetch(
        cohort,
        dest,
        modalities=csv_list(modalities),
        resolution=resolutions,
        tissues=csv_list(tissues),
        masks=csv_list(masks),
        storage_options=parse_storage_options(storage_option or []) or None,
        workers=workers,
        progress=True,
    )
    console.print(
        f"fetched {result.source} into {result.path}: {result.files} files, "
        f"{result.bytes_downloaded / 1e6:.1f} MB downloaded ({result.bytes_total / 1e6:.1f} MB selected)",
        highlight=False,
        soft_wrap=True,
    )
