"""Cohort commands of ``spora-sd``: validate, info, convert, export, make-synthetic, standardize, tile, consolidate.

Each is a thin wrapper around one Python function (named in its help); :mod:`spora_sd.cli.app` mounts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from spora_sd.cli.errors import console, csv_list, handle_errors
from spora_sd.cli.errors import console as stdout_console
from spora_sd.errors import CohortNotFoundError

__all__ = [
    "consolidate",
    "convert",
    "export",
    "info",
    "make_synthetic",
    "print_report",
    "standardize",
    "tile",
    "validate",
]

_COHORT_HELP = (
    "Cohort folder, dataset key or alias, or a remote location: s3://bucket/prefix/<dataset>, "
    "https://.../<dataset>, or an rclone remote:bucket/prefix/<dataset>."
)
#: ``--storage-option KEY=VALUE`` (repeatable), for every command that takes a cohort.
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="KEY=VALUE for the remote filesystem (s3fs, HTTP), repeatable; dotted keys nest, e.g. "
        "client_kwargs.endpoint_url=http://127.0.0.1:9000 or anon=true. Prefer the AWS variables or an rclone "
        "remote for secrets: a command line is visible to other users of the machine.",
    ),
]
#: The options of every command that writes a cohort (export and ``spora-sd import ...``).
_Overwrite = Annotated[bool, typer.Option(help="Replace an existing cohort folder (atomically).")]
_Standardization = Annotated[bool, typer.Option(help="Compute standardization statistics (spec §6).")]
_Tiling = Annotated[bool, typer.Option(help="Compute the default 256 px tiling (spec §8).")]


def _write_cohort(function: Callable[..., Path], options: dict[str, Any]) -> None:
    """Call ``function(source, out, **options, progress=True)`` and print the cohort folder it wrote.

    A command passes its own options (``dict(locals())`` as its first statement): the first two are the
    source and the cohort folder, the others are named as the writer's keyword arguments, so one call
    serves ``export`` and every ``spora-sd import`` command. Enum choices go in as their string values.

    >>> _write_cohort(lambda src, out, progress, n: out / f"{src}{n}", {"src": "s", "out": Path("o"), "n": 1})
    wrote o/s1
    """
    kwargs = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
    source, out = (kwargs.pop(k) for k in list(kwargs)[:2])
    path = function(source, out, progress=True, **kwargs)
    console.print(f"wrote {path}")


def _options(pairs: list[str] | None) -> dict[str, Any] | None:
    from spora_sd.io.location import parse_storage_options

    return parse_storage_options(pairs) if pairs else None


@handle_errors
def validate(
    path: Annotated[str, typer.Argument(help=_COHORT_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    deep: Annotated[
        bool,
        typer.Option(help="Also decode every image chunk and check every file against metadata/manifest.json (slow)."),
    ] = False,
    allow_partial: Annotated[bool, typer.Option(help="Missing files of a partial copy are warnings.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Check a cohort against every rule of the spora layout. Exit 0 when valid, 1 otherwise.

    → Python: ``spora_sd.validate(path)``
    """
    from spora_sd.validation.validator import validate as run_validate

    report = run_validate(path, deep=deep, allow_partial=allow_partial, storage_options=_options(storage_option))
    if as_json:
        typer.echo(report.to_json())
    else:
        print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def print_report(report: Any, console: Console | None = None) -> None:
    """Print a validation report, never cutting a file name.

    On a terminal: a table whose columns wrap (long paths are folded onto several lines, never
    shortened with an ellipsis). Elsewhere (CI logs, a pipe to ``grep``): one problem per line,
    ``severity<TAB>file<TAB>rule<TAB>message``, whole and unwrapped.
    """
    out = stdout_console if console is None else console
    checked = ", ".join(f"{n} {k}" for k, n in sorted(report.checked.items())) or "nothing"
    if not out.is_terminal:
        # straight to the file: rich would wrap long lines and expand the tabs
        lines = [f"{report.root}: {'valid' if report.ok else 'INVALID'} (checked {checked})"]
        lines += ["\t".join(_one_line(t) for t in (p.severity, p.file, p.rule, p.message)) for p in report.problems]
        out.file.write("".join(f"{line}\n" for line in lines))
        out.file.flush()
        return
    status = Text("valid", style="green") if report.ok else Text("INVALID", style="red")
    out.print(Text.assemble(f"{report.root}: ", status, f" (checked {checked})"), overflow="fold")
    if report.problems:
        table = Table(show_lines=False)
        for header in ("severity", "file", "rule", "message"):
            table.add_column(header, overflow="fold")
        for p in report.problems:
            color = "red" if p.severity == "error" else "yellow"
            table.add_row(Text(p.severity, style=color), Text(p.file), Text(p.rule), Text(p.message))
        out.print(table)


def _one_line(text: object) -> str:
    """A field of a plain report line: no tab or line break of its own."""
    return " ".join(str(text).replace("\t", " ").splitlines())


@handle_errors
def info(
    cohort: Annotated[str, typer.Argument(help=_COHORT_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Summarise a cohort: tissues, modalities, channels, resolutions, cells, missing files.

    → Python: ``spora_sd.open_cohort(path).summary()``
    """
    from spora_sd.io.cohort import open_cohort

    summary = open_cohort(cohort, storage_options=_options(storage_option)).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(f"[bold]{summary['dataset']}[/] ({summary['path']})")
    console.print(f"tissues: {summary['n_tissues']}   cells: {summary['n_cells']}")
    table = Table("modality", "tissues", "resolutions (mpp)", "channels")
    for m, e in summary["modalities"].items():
        channels = e.get("channels")
        shown = (
            ""
            if channels is None
            else f"{len(channels)}: " + ", ".join(channels[:8]) + (" ..." if len(channels) > 8 else "")
        )
        table.add_row(m, str(e["n_tissues"]), ", ".join(map(str, e["resolutions"])), shown)
    console.print(table)
    console.print(f"mask resolutions: {summary['mask_resolutions']}   semantic tasks: {summary['tasks']}")
    if summary["missing"]:
        console.print(f"[yellow]missing ({len(summary['missing'])}):[/] " + ", ".join(summary["missing"][:10]))


@handle_errors
def convert(
    cohort: Annotated[str, typer.Argument(help=_COHORT_HELP)],
    out: Annotated[Path, typer.Argument(help="SpatialData Zarr store to write (.zarr).")],
    tissues: Annotated[str | None, typer.Option(help="Comma-separated tissue ids (default: all).")] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated modalities (default: all on disk).")] = None,
    resolution: Annotated[
        float | None, typer.Option(help="Microns per pixel of the images; default the finest stored.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store (atomically).")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Convert a cohort to a SpatialData Zarr store (one coordinate system per tissue, in µm).

    → Python: ``spora_sd.write_spatialdata(spora_sd.to_spatialdata(cohort, ...), out)``
    """
    from spora_sd.convert.to_spatialdata import convert as run_convert

    path = run_convert(
        cohort,
        out,
        tissues=csv_list(tissues),
        modalities=csv_list(modalities),
        resolution=resolution,
        overwrite=overwrite,
        progress=True,
        storage_options=_options(storage_option),
    )
    console.print(f"wrote {path}")


@handle_errors
def make_synthetic(
    root: Annotated[Path, typer.Argument(help="Folder in which to create the cohort.")],
    name: Annotated[str, typer.Option(help="Dataset key (folder name).")] = "synthetic2025cohort",
    n_tissues: Annotated[int, typer.Option(help="Number of tissues.")] = 4,
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities.")] = "imc,he",
    resolutions: Annotated[str, typer.Option(help="Comma-separated resolutions in mpp.")] = "1.0",
    image_size: Annotated[int, typer.Option(help="Image height and width in pixels.")] = 256,
    n_channels: Annotated[int, typer.Option(help="Multiplex panel size.")] = 12,
    n_cells: Annotated[int, typer.Option(help="Cells per tissue (approximately).")] = 150,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing cohort.")] = False,
) -> None:
    """Write a synthetic cohort that mimics a real one (deterministic per seed).

    → Python: ``spora_sd.make_synthetic_cohort(root, ...)``
    """
    from spora_sd.datasets.synthetic import make_synthetic_cohort

    path = make_synthetic_cohort(
        root,
        name=name,
        n_tissues=n_tissues,
        modalities=tuple(csv_list(modalities) or ()),
        resolutions=tuple(float(r) for r in csv_list(resolutions) or ()),
        seed=seed,
        image_size=image_size,
        n_channels=n_channels,
        n_cells=n_cells,
        overwrite=overwrite,
    )
    console.print(f"wrote {path}")


@handle_errors
def export(
    sdata_path: Annotated[
        Path, typer.Argument(help="SpatialData Zarr store (.zarr).", exists=True, file_okay=False, dir_okay=True)
    ],
    out: Annotated[Path, typer.Argument(help="Cohort folder to create (or datasets root with --dataset).")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset key; default the name of OUT, which must then be a valid key.")
    ] = None,
    mpp: Annotated[
        float | None, typer.Option(help="Microns per pixel, when the transformations carry no Scale.")
    ] = None,
    modality: Annotated[str, typer.Option(help="Modality of the images when inferring (imc, codex, ...).")] = "imc",
    patient_key: Annotated[
        str | None, typer.Option(help="Cell-table column holding the raw patient id (constant per tissue).")
    ] = None,
    overwrite: _Overwrite = False,
    standardization: _Standardization = True,
    tiling: _Tiling = True,
) -> None:
    """Write a SpatialData Zarr store as a spora cohort (atomically; valid or nothing).

    → Python: ``spora_sd.from_spatialdata(spatialdata.read_zarr(path), out, ...)``
    """
    options = dict(locals())  # first statement: exactly the command's options
    import spatialdata

    from spora_sd.convert.from_spatialdata import from_spatialdata

    _write_cohort(lambda store, out, **kw: from_spatialdata(spatialdata.read_zarr(store), out, **kw), options)


@handle_errors
def standardize(
    cohort: Annotated[str, typer.Argument(help=_COHORT_HELP)],
    modality: Annotated[
        str | None, typer.Option(help="Multiplex modality; default every multiplex modality of the cohort.")
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods.")
    ] = "quantile_clipping,quantile_clipping_log1p",
    upper_quantile: Annotated[float, typer.Option(help="Upper quantile level.")] = 0.99,
    lower_quantile: Annotated[float | None, typer.Option(help="Lower quantile level (default: lower = 0).")] = None,
    resolution: Annotated[float | None, typer.Option(help="Microns per pixel; default the finest stored.")] = None,
    tissue_mask: Annotated[bool, typer.Option(help="Use only tissue-mask pixels.")] = True,
    output: Annotated[
        Path | None, typer.Option(help="Local cohort folder to write into (required for a remote cohort).")
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Compute the standardization statistics of a cohort (spec §6), one pass over the images.

    → Python: ``spora_sd.compute_standardization(cohort, modality, method=...)``
    """
    from spora_sd.io.cohort import open_cohort
    from spora_sd.stats.standardization import compute_standardizations

    opened = open_cohort(cohort, storage_options=_options(storage_option))
    modalities = [modality] if modality else opened.multiplex_modalities
    if not modalities:
        raise CohortNotFoundError(
            f"{opened.path}: no multiplex modality to standardize (modalities found: {opened.modalities or 'none'})"
        )
    for m in modalities:
        for folder in compute_standardizations(
            opened,
            m,
            methods=csv_list(methods) or (),
            upper_quantile=upper_quantile,
            lower_quantile=lower_quantile,
            resolution=resolution,
            use_tissue_mask=tissue_mask,
            progress=True,
            output=output,
        ):
            console.print(f"wrote {folder}")


@handle_errors
def tile(
    cohort: Annotated[str, typer.Argument(help=_COHORT_HELP)],
    tile_size: Annotated[int, typer.Option(help="Tile side in pixels.")] = 256,
    strategy: Annotated[
        str, typer.Option(help="'default' (inside the image) or 'grid' (may reach past it).")
    ] = "default",
    stride: Annotated[int | None, typer.Option(help="Step between tiles; default the tile size.")] = None,
    min_tissue: Annotated[float, typer.Option(help="Minimum tissue fraction of a kept tile.")] = 0.5,
    resolution: Annotated[
        float | None, typer.Option(help="Microns per pixel; default the finest mask resolution.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Local cohort folder to write into (required for a remote cohort).")
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Compute the tiles of every tissue mask (spec §8).

    → Python: ``spora_sd.compute_tiling(cohort, tile_size=..., strategy=...)``
    """
    from spora_sd.stats.tiling import compute_tiling

    path = compute_tiling(
        cohort,
        tile_size=tile_size,
        strategy=strategy,
        stride=stride,
        min_tissue=min_tissue,
        resolution=resolution,
        progress=True,
        output=output,
        storage_options=_options(storage_option),
    )
    console.print(f"wrote {path}")


@handle_errors
def consolidate(
    cohort: Annotated[
        str, typer.Argument(help="Cohort folder, dataset key or alias, or s3://bucket/prefix/<dataset>.")
    ],
    storage_option: StorageOptions = None,
) -> None:
    """Add consolidated metadata to each image's zarr.json: remote opens then read one file per image.

    Images written by spora-sd have it already; this is for cohorts written by other tools (local or
    on S3; each group zarr.json is replaced atomically, and a second run writes nothing).

    → Python: ``spora_sd.consolidate_images(cohort)``
    """
    from spora_sd.io.consolidate import consolidate_images

    written = consolidate_images(cohort, storage_options=_options(storage_option), progress=True)
    console.print(f"consolidated {written} image groups")
