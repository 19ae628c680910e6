"""LaminDB commands of the ``spora-sd`` command line.

``lamin_app`` is mounted as ``spora-sd lamin`` (``init``, ``register``, ``catalogue``, ``search``,
``load``, ``export``); :mod:`spora_sd.cli.app` also mounts ``register``, ``search`` and ``load`` at the top level.
Every command works on the current LaminDB instance: the one ``spora-sd lamin init DIR`` created or
connected last (or ``lamin connect``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spora_sd.cli.cohort import StorageOptions, _options
from spora_sd.cli.errors import console, handle_errors

__all__ = ["catalogue_cmd", "export_cmd", "init_cmd", "lamin_app", "load_cmd", "register_cmd", "search_cmd"]


lamin_app = typer.Typer(
    name="lamin",
    help="Register cohorts in LaminDB with ontology labels, find them by tissue/disease/assay, load them.",
    no_args_is_help=True,
)

_TERM_HELP = "a name, a synonym or an ontology id"


@lamin_app.command("init")
@handle_errors
def init_cmd(
    storage: Annotated[
        Path, typer.Argument(help="Local folder of the instance (created if missing); names the instance.")
    ],
    db: Annotated[
        str | None, typer.Option(help="PostgreSQL URL, e.g. postgresql://user@127.0.0.1:5432/spora; default SQLite.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Instance name; default the storage folder's name.")] = None,
    shared_storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="s3://bucket/prefix of a shared instance (with --db): SpatialData copies go there. Every client "
            "runs the same command with its own local folder.",
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="Endpoint of an S3-compatible server (MinIO, Ceph, ...) for --storage.")
    ] = None,
) -> None:
    """Create a LaminDB instance with bionty and the offline ontologies (or connect to an existing one).

    → Python: ``spora_sd.lamin.init_instance(storage, db=db, shared_storage=..., endpoint_url=...)``
    """
    from spora_sd.lamin import init_instance, setup_ontologies
    from spora_sd.lamin.instance import shared_storage as shared_location

    slug = init_instance(
        storage, db=db, name=name, ontologies=False, shared_storage=shared_storage, endpoint_url=endpoint_url
    )
    sources = setup_ontologies()
    console.print(f"instance [bold]{slug}[/] ready (storage {Path(storage).expanduser().resolve()})")
    shared = shared_location()
    if shared is not None:
        console.print(f"  shared storage {shared.root}")
    for field, source in sources.items():
        console.print(f"  {field:<10} {source.name} {source.version}")


@handle_errors
def register_cmd(
    cohort: Annotated[
        str,
        typer.Argument(
            help="Cohort folder, s3:// location, or a cohort name of the registry (jackson2020): its local copy "
            "under $SPORA_DATASETS_DIR, else the hosted one in the bucket (tables read, no image)."
        ),
    ],
    mode: Annotated[
        str | None,
        typer.Option(help="cohort: the folder in place, no copy (default); spatialdata: a SpatialData copy."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Artifact key; default spora/<dataset> (spora/<dataset>.zarr for a copy).")
    ] = None,
    tissue: Annotated[str | None, typer.Option(help=f"Tissue: {_TERM_HELP} (UBERON).")] = None,
    disease: Annotated[str | None, typer.Option(help=f"Disease: {_TERM_HELP} (MONDO).")] = None,
    organism: Annotated[str | None, typer.Option(help=f"Organism: {_TERM_HELP} (NCBITaxon).")] = None,
    assay: Annotated[str | None, typer.Option(help=f"Assay: {_TERM_HELP} (EFO/OBI).")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Register a cohort as a curated artifact, in place (same content: nothing new; changed: new version).

    → Python: ``spora_sd.lamin.register(cohort, tissue=..., disease=...)``
    """
    from spora_sd.lamin import register

    labels = {"tissue": tissue, "disease": disease, "organism": organism, "assay": assay}
    artifact = register(cohort, mode=mode, key=key, storage_options=_options(storage_option), **labels)
    tissues = ", ".join(t.name for t in artifact.tissues.all())
    diseases = ", ".join(d.name for d in artifact.diseases.all())
    console.print(f"{artifact.key}  uid {artifact.uid}  ({tissues}; {diseases})")
    console.print(f"  {artifact.path}")


@handle_errors
def catalogue_cmd(
    keys: Annotated[
        list[str] | None, typer.Argument(help="Registry keys or aliases (jackson2020 ...); default: every cohort.")
    ] = None,
    datasets_dir: Annotated[
        str | None, typer.Option(help="Folder (or URL) of local copies; default $SPORA_DATASETS_DIR.")
    ] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Register every registry cohort with a reachable copy (local first, else the bucket), tables only.

    Unreachable cohorts are listed with the reason; they do not stop the others.
    A rerun keeps unchanged artifacts. Exits 1 when a reachable cohort failed to register.

    → Python: ``spora_sd.lamin.register_catalogue(keys, storage_options=...)``
    """
    from spora_sd.lamin import register_catalogue

    catalogue = register_catalogue(
        keys or None, storage_options=_options(storage_option), datasets_dir=datasets_dir, progress=True
    )
    table = Table(title=f"catalogue: {catalogue.summary()}")
    for column in ("key", "status", "uid", "location / reason", "s"):
        table.add_column(column, justify="right" if column == "s" else "left", overflow="fold")
    for e in catalogue.entries:
        table.add_row(e.key, e.status, e.uid or "", e.reason or e.location, f"{e.seconds:.1f}")
    console.print(table)
    console.print(catalogue.summary())
    if catalogue.with_status("failed"):
        raise typer.Exit(1)


@handle_errors
def search_cmd(
    tissue: Annotated[str | None, typer.Option(help=f"Tissue: {_TERM_HELP}.")] = None,
    disease: Annotated[str | None, typer.Option(help=f"Disease: {_TERM_HELP}; descendants match too.")] = None,
    assay: Annotated[str | None, typer.Option(help=f"Assay: {_TERM_HELP}.")] = None,
    organism: Annotated[str | None, typer.Option(help=f"Organism: {_TERM_HELP}.")] = None,
    cell_type: Annotated[str | None, typer.Option(help=f"Cell type: {_TERM_HELP}, or a label kept as ULabel.")] = None,
    all_versions: Annotated[bool, typer.Option(help="List every version, not only the latest.")] = False,
) -> None:
    """Find registered cohorts by biology (ontology descendants included), as a table.

    → Python: ``spora_sd.lamin.search(tissue=..., disease=...)``
    """
    from spora_sd.lamin import search

    hits = search(
        tissue=tissue, disease=disease, assay=assay, organism=organism, cell_type=cell_type, all_versions=all_versions
    )
    table = Table(title=f"{len(hits)} registered cohort(s)")
    for column in hits.columns:
        table.add_column(column, justify="right" if column.startswith("n_") else "left", overflow="fold")
    for row in hits.itertuples(index=False):
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)


@handle_errors
def load_cmd(
    ref: Annotated[str, typer.Argument(help="Dataset key, artifact key or uid.")],
    out: Annotated[Path | None, typer.Option(help="Also write the SpatialData to this .zarr store.")] = None,
) -> None:
    """Load a registered cohort as SpatialData and describe it (optionally write it to a Zarr store).

    → Python: ``spora_sd.lamin.load(ref)``
    """
    from spora_sd.lamin import load

    sdata = load(ref)
    console.print(sdata)
    if out is not None:
        sdata.write(out)
        console.print(f"wrote {out}")


@handle_errors
def export_cmd(
    ref: Annotated[str, typer.Argument(help="Dataset key, artifact key or uid.")],
    out: Annotated[Path, typer.Argument(help="Cohort folder to write (named after the dataset key).")],
) -> None:
    """Write a registered cohort back to a spora cohort folder.

    → Python: ``spora_sd.lamin.export(ref, out)``
    """
    from spora_sd.lamin import export

    console.print(f"wrote {export(ref, out)}")


lamin_app.command("register")(register_cmd)
lamin_app.command("catalogue")(catalogue_cmd)
lamin_app.command("search")(search_cmd)
lamin_app.command("load")(load_cmd)
lamin_app.command("export")(export_cmd)
