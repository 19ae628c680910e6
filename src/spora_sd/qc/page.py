"""``write_qc_report``: the static, self-contained QC page of a cohort (HTML, images inlined, no JavaScript).

The page has four parts: a summary, the validation problems (:func:`spora_sd.validate`), the
per-marker intensity distributions across tissues (:mod:`spora_sd.qc.distributions`) and one row per
tissue (thumbnails with the tissue outline, cell count, cell-type fractions, missing channels).

It is built tissue by tissue: each tissue is one job (:mod:`spora_sd.qc.tissues`, run on the active
dask.distributed client when there is one, see :mod:`spora_sd.stats.parallel`) whose row is rendered
as soon as it arrives and spooled to a temporary file; only the small per-tissue quantiles stay in
memory for the distributions. The page is then streamed into place atomically. Templates are
Jinja2 files shipped in ``spora_sd/qc/templates/``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from spora_sd import layout
from spora_sd._version import __version__
from spora_sd.errors import InvalidArgumentError, SporaError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.qc.cells import CellCounts, cell_counts
from spora_sd.qc.distributions import low_signal, strip
from spora_sd.qc.markers import RGB, pick_markers
from spora_sd.qc.thumbnails import OUTLINE_RGB, png_data_uri
from spora_sd.qc.tissues import TissueResult, run_tissue_job, tissue_jobs
from spora_sd.stats.parallel import imap_tissues

__all__ = ["write_qc_report"]

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 1000  # problems listed on the page; the rest are counted (spora-sd validate lists all)
# cell-type colours (matplotlib's tab20, without matplotlib)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
_SPOOL_BYTES = 32 << 20  # rows beyond this go to a temporary file


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("spora_sd.qc", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _missing_channels(cohort: Cohort, tissue_id: str, modalities: Sequence[str]) -> dict[str, list[str]]:
    """Panel channels of each multiplex modality that the tissue's image lacks."""
    out = {}
    for modality in modalities:
        if layout.is_multiplex(modality):
            try:
                present = set(cohort.tissue_channels(tissue_id, modality))
            except SporaError:  # no channels_per_tissue row: the row's notes and the validation say so
                continue
            out[modality] = [c for c in cohort.panel(modality) if c not in present]
    return out


def _ordered(results: Iterator[tuple[int, TissueResult]]) -> Iterator[tuple[int, TissueResult]]:
    """Results in job order (a distributed map yields them as they complete)."""
    waiting: dict[int, TissueResult] = {}
    following = 0
    for position, result in results:
        waiting[position] = result
        while following in waiting:
            yield following, waiting.pop(following)
            following += 1


def _read_back(spool: IO[str]) -> Iterator[str]:
    import markupsafe

    spool.seek(0)
    while chunk := spool.read(1 << 20):
        yield markupsafe.Markup(chunk)


def write_qc_report(
    cohort: str | os.PathLike[str] | Cohort,
    out_html: str | os.PathLike[str],
    *,
    markers: Sequence[str] | None = None,
    thumbnail_size: int = 160,
    cell_type_column: str = "cell_type",
    tissues: Sequence[str] | None = None,
    validate: bool = True,
    overwrite: bool = True,
    progress: bool = False,
) -> Path:
    """Write the static QC page of a cohort to ``out_html``: one self-contained HTML file.

    Parameters
    ----------
    cohort
        Cohort folder, dataset key or alias, or an opened :class:`~spora_sd.Cohort`.
    out_html
        The page to write (atomically: a crash leaves the old file or none).
    markers
        One to three channel names shown as red, green and blue in the multiplex thumbnails; by
        default an immune marker, an epithelial or stromal marker and a nuclear stain of the panel
        (see ``spora_sd.qc.markers.default_markers``).
    thumbnail_size
        Longest side of a thumbnail in pixels (about: the smallest pyramid level at least this large
        is read and averaged over whole pixel blocks, so a side ends up within 0.75-1.5 times this).
    cell_type_column
        Column of ``cells.parquet`` whose fractions are shown per tissue.
    tissues
        Only these tissues (default: every tissue of ``tissues.parquet``, in its order).
    validate
        Run :func:`spora_sd.validate` and list its problems on the page.
    overwrite
        Replace an existing ``out_html``.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    InvalidArgumentError
        ``markers`` names a channel that is not in the panel, ``thumbnail_size`` is not positive, or
        ``tissues`` names an unknown tissue.
    TargetExistsError
        ``out_html`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib, spora_sd
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> root = spora_sd.make_synthetic_cohort(tmp, n_tissues=2, image_size=64, n_cells=10)
    >>> page = spora_sd.write_qc_report(root, tmp / "qc.html")
    >>> text = page.read_text()
    >>> text.count('class="tissue"'), "<script" in text
    (2, False)
    """
    opened = open_cohort(cohort)
    if thumbnail_size < 8:
        raise InvalidArgumentError(f"thumbnail_size={thumbnail_size!r}: give at least 8 pixels")
    all_tissues = list(dict.fromkeys(opened.tissues["tissue_id"].astype(str)))
    if tissues is not None:
        unknown = [t for t in tissues if t not in all_tissues]
        if unknown:
            raise InvalidArgumentError(f"tissues {unknown[:5]} are not in {opened.paths.tissues}")
        all_tissues = [t for t in all_tissues if t in set(tissues)]
    multiplex = opened.multiplex_modalities
    chosen = {m: pick_markers(opened.channels(m), markers, modality=m) for m in multiplex}

    report = None
    if validate:
        from spora_sd.validation.validator import validate as run_validate

        report = run_validate(opened.path)
    counts = cell_counts(opened, cell_type_column)
    cell_types = list(counts.types.columns) if counts is not None and counts.types is not None else []
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(cell_types)}

    jobs = tissue_jobs(opened, chosen, thumbnail_size, all_tissues)
    modalities_of = {job.tissue_id: [mj.modality for mj in job.modalities] for job in jobs}
    quantiles = {m: np.full((len(jobs), len(opened.panel(m)), 5), np.nan, dtype=np.float32) for m in multiplex}
    env = _environment()
    row_template = env.get_template("row.html.j2")
    target = Path(out_html)
    with (
        tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8") as spool,
        atomic_path(target, overwrite=overwrite) as tmp,
    ):
        results = imap_tissues(run_tissue_job, jobs, progress=progress, description="QC report")
        n_errors = 0
        for position, result in _ordered(results):
            for modality, q in result.quantiles.items():
                if modality in quantiles:
                    quantiles[modality][position] = q
            n_errors += bool(result.errors)
            spool.write(
                row_template.render(
                    number=position + 1,
                    result=result,
                    modalities=modalities_of[result.tissue_id],
                    cells=_cells_of(counts, result.tissue_id),
                    fractions=counts.fractions(result.tissue_id) if counts is not None else [],
                    colours=colours,
                    missing=_missing_channels(opened, result.tissue_id, modalities_of[result.tissue_id]),
                )
            )
        distributions = _distributions(opened, multiplex, quantiles, all_tissues)
        env.get_template("report.html.j2").stream(
            version=__version__,
            cohort=opened,
            n_tissues=len(jobs),
            modalities=opened.modalities,
            markers={m: list(zip(RGB, names, strict=False)) for m, names in chosen.items()},
            thumbnail_size=thumbnail_size,
            outline_rgb="#{:02x}{:02x}{:02x}".format(*OUTLINE_RGB),
            report=report,
            problems=report.problems[:MAX_PROBLEMS] if report is not None else [],
            more_problems=max(0, len(report.problems) - MAX_PROBLEMS) if report is not None else 0,
            counts=counts,
            cell_type_column=cell_type_column,
            colours=colours,
            distributions=distributions,
            n_errors=n_errors,
            rows=_read_back(spool),
        ).dump(str(tmp), encoding="utf-8")
    logger.debug("wrote %s (%d tissues)", target, len(jobs))
    return target


def _cells_of(counts: CellCounts | None, tissue_id: str) -> int | None:
    if counts is None:
        return None
    return int(counts.totals.get(tissue_id, 0))


def _distributions(
    cohort: Cohort, modalities: Sequence[str], quantiles: dict[str, np.ndarray], tissues: Sequence[str]
) -> list[dict[str, Any]]:
    """One entry per multiplex channel: its strip picture, axis top and low-signal tissues."""
    out = []
    for modality in modalities:
        table = cohort.channels(modality)
        qc_pass = table["qc_pass"].fillna(True).astype(bool).tolist() if "qc_pass" in table else [True] * len(table)
        for i, name in enumerate(cohort.panel(modality)):
            q = quantiles[modality][:, i, :]
            known = q[np.isfinite(q).all(axis=1)]
            flagged = low_signal(q)
            out.append(
                {
                    "modality": modality,
                    "name": name,
                    "qc_pass": qc_pass[i],
                    "png": png_data_uri(strip(q)),
                    "top": float(known[:, -1].max()) if len(known) else float("nan"),
                    "median": float(np.median(known[:, 2])) if len(known) else float("nan"),
                    "missing": int(len(q) - len(known)),
                    "low": [(j + 1, tissues[j]) for j in flagged],
                }
            )
    return out
