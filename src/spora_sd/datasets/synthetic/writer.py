"""Writing a synthetic cohort: one tissue at a time (images, masks, cells), then the cohort's tables,
standardization statistics and tiling; :func:`make_synthetic_cohort` is the entry point.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.datasets.synthetic.biology import _SUBTYPES, CELL_TYPES, CELL_TYPES_TASK, DEFAULT_NAME, MARKERS
from spora_sd.datasets.synthetic.geometry import _cell_shapes, _cell_types, _place_cells, _rasterize, _tissue_mask
from spora_sd.datasets.synthetic.rendering import _downsample, _expression, _label_means, _render_he, _render_multiplex
from spora_sd.errors import InvalidArgumentError, TargetExistsError
from spora_sd.io.atomic import export_workspace
from spora_sd.io.images import build_pyramid, write_image
from spora_sd.io.manifest import write_manifest
from spora_sd.io.masks import write_mask
from spora_sd.io.tables import write_table
from spora_sd.layout import CohortPaths
from spora_sd.stats.parallel import map_tissues

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# one tissue


@dataclass(frozen=True)
class _TissueJob:
    """What a worker needs to render and write one tissue (plain values: it pickles cheaply)."""

    root: str
    index: int
    seed: int
    tissue_id: str
    shape: tuple[int, int]
    n_cells: int
    multiplex: str | None
    panel: tuple[int, ...]  # MARKERS indices of the cohort panel, in panel order
    measured: tuple[bool, ...]  # per panel channel: does this tissue's image contain it
    failed: int | None  # panel position of the qc-failed channel
    has_he: bool
    resolutions: tuple[float, ...]  # finest first
    n_levels: int
    dtype: str


def _write_image(path: Path, image: np.ndarray, mpp: float, names: Sequence[str], n_levels: int) -> None:
    # Levels are computed here with numpy (dask's synchronous scheduler), so that write_image gets
    # in-memory arrays: no nested dask graph when this runs inside a dask.distributed task.
    if n_levels == 1:
        levels = [image]
    else:
        levels = [np.asarray(level.compute(scheduler="synchronous")) for level in build_pyramid(image, n_levels)]
    write_image(path, levels, mpp=mpp, channel_names=list(names))


def _render_tissue(job: _TissueJob) -> pd.DataFrame:
    """Render, write the images and masks of one tissue; return its rows of the cells table."""
    paths = CohortPaths(job.root)
    streams = np.random.SeedSequence([job.seed, 1, job.index]).spawn(4)
    geometry, expression_rng, noise, he_rng = (np.random.default_rng(s) for s in streams)
    height, width = job.shape

    tissue = _tissue_mask(geometry, height, width)
    y, x, spacing = _place_cells(geometry, tissue, job.n_cells)
    types = _cell_types(geometry, y, x, height, width)
    labels, zones, cells = _rasterize(_cell_shapes(geometry, y, x, types, spacing), height, width)
    tissue |= labels > 0
    n = int(cells.y.size)
    finest = job.resolutions[0]

    rows = pd.DataFrame(
        {
            "tissue_id": job.tissue_id,
            "cell_id": np.arange(1, n + 1, dtype=np.int64),
            "cell_type": pd.Categorical.from_codes(cells.types, categories=[t.name for t in CELL_TYPES]),
            "cell_category": pd.Categorical(
                [CELL_TYPES[t].category for t in cells.types], categories=sorted({t.category for t in CELL_TYPES})
            ),
        }
    )
    write_mask(paths.instance_mask(finest, job.tissue_id), labels)
    semantic = np.concatenate([[0], cells.types + 1]).astype(np.uint8)[labels]  # label-encoder values
    write_mask(paths.semantic_mask(finest, CELL_TYPES_TASK, job.tissue_id), semantic)

    if job.multiplex is not None:
        panel = [MARKERS[i] for i in job.panel]
        expression = _expression(expression_rng, cells.types, panel)
        if job.failed is not None:
            expression[:, job.failed] = 0.0  # the antibody did not work: background only
        measured = [j for j, present in enumerate(job.measured) if present]
        markers = [panel[j] for j in measured]
        image = _render_multiplex(noise, labels, zones, expression[:, measured], markers, np.dtype(job.dtype))
        means = np.full((n, len(panel)), np.nan, dtype=np.float32)
        means[:, measured] = _label_means(labels, image).T
        rows = pd.concat([rows, pd.DataFrame(means, columns=[m.name for m in panel])], axis=1)
        for mpp in job.resolutions:
            _write_image(
                paths.image(job.multiplex, mpp, job.tissue_id),
                _downsample(image, mpp / finest),
                mpp,
                [m.name for m in markers],
                job.n_levels,
            )
        del image
    if job.has_he:
        he = _render_he(he_rng, tissue, labels, zones, cells.types)
        for mpp in job.resolutions:
            _write_image(
                paths.image(layout.HE, mpp, job.tissue_id),
                _downsample(he, mpp / finest),
                mpp,
                list(layout.HE_CHANNELS),
                job.n_levels,
            )
    for mpp in job.resolutions:
        write_mask(paths.tissue_mask(mpp, job.tissue_id), _downsample(tissue, mpp / finest))
    return rows


# --------------------------------------------------------------------------------------------------
# the cohort


def _sizes(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        return int(image_size), int(image_size)
    try:
        height, width = (int(s) for s in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image_size must be an int or (height, width), got {image_size!r}") from None
    return height, width


def _check_modalities(modalities: Sequence[str]) -> tuple[str | None, bool]:
    if isinstance(modalities, str):
        modalities = (modalities,)
    modalities = tuple(dict.fromkeys(layout.check_modality(m) for m in modalities))
    multiplex = [m for m in modalities if layout.is_multiplex(m)]
    other = [m for m in modalities if not layout.is_multiplex(m) and m != layout.HE]
    if not modalities or len(multiplex) > 1 or other:
        raise InvalidArgumentError(
            f"modalities must be one multiplex modality ({', '.join(layout.MULTIPLEX_MODALITIES)}) and/or 'he', "
            f"got {modalities!r}"
        )
    return (multiplex[0] if multiplex else None), layout.HE in modalities


def _tile_size_for(shapes: Sequence[tuple[int, int]]) -> int:
    """256, or the largest power of two that fits the smallest image side."""
    smallest = min(min(s) for s in shapes)
    return max(1, min(256, 2 ** int(math.floor(math.log2(max(smallest, 1))))))


def make_synthetic_cohort(
    root: str | Path,
    name: str = DEFAULT_NAME,
    n_tissues: int = 4,
    modalities: Sequence[str] = ("imc", "he"),
    resolutions: Sequence[float] = (1.0,),
    seed: int = 0,
    *,
    image_size: int | tuple[int, int] = 256,
    size_jitter: float = 0.1,
    n_channels: int = 12,
    n_cells: int = 150,
    n_levels: int = 1,
    dtype: str = "uint16",
    he_tissues: Sequence[int] | None = None,
    standardization: bool = True,
    tiling: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a valid, realistic synthetic cohort at ``root/name``; deterministic per ``seed``.

    What it contains:

    - ``n_tissues`` tissues from ``n_tissues - 1`` patients (the first patient has two specimens,
      ``0000`` and ``0001``, from one biopsy), with clinical columns (``original_patient_id``,
      ``biopsy_id``, ``split`` by patient, ``grade``, ``subtype``, ``age``) and ``mpp_<modality>``;
    - a tissue mask per tissue (a blob with holes), cells drawn as ellipses that may touch but never
      share a pixel, each with a nucleus, cytoplasm and membrane rim, and six cell types placed in
      tumour nests, stroma and a lymphoid aggregate;
    - for the multiplex modality, a panel of the first ``n_channels`` of :data:`MARKERS` (real HUGO
      symbols with UniProt accessions, nuclear markers ``DNA1``/``H3C1``); the last panel channel
      fails QC (``qc_pass=False``, background only); the second-to-last is missing from the last
      tissue (and every tenth one), which is ``False`` in ``channels_per_tissue`` and absent from that
      tissue's image; expression depends on the cell type;
    - with ``"he"``, an RGB H&E of the same cells on the same pixel grid for ``he_tissues``
      (``alignment="exact"`` for tissues with both modalities, ``"no alignment"`` for the others,
      missing when the cohort has one modality);
    - masks: tissue masks at every resolution, instance masks and the ``cell_types`` semantic mask with
      its label encoder at the finest resolution;
    - ``cells.parquet``: ``tissue_id, cell_id, cell_type, cell_category`` and the mean intensity of
      every panel channel, measured on the written finest image (NaN where the tissue lacks the channel);
    - unless switched off, both baseline standardization specs at ``uq_0.99`` and a ``default`` tiling
      at every resolution (tile size 256, or the largest power of two that fits the smallest image).

    The cohort is built in a hidden temporary folder next to the target and renamed when complete.

    Parameters
    ----------
    root
        Folder in which the cohort folder is created.
    name
        Dataset key (folder name), e.g. ``"synthetic2025cohort"``.
    n_tissues
        Number of tissues.
    modalities
        One multiplex modality (``imc``, ``codex``, ``cycif``, ``mibi``) and/or ``he``.
    resolutions
        Microns per pixel; images are rendered at the finest and area-averaged to the others.
    seed
        Random seed: the same seed gives the same pixels and tables.
    image_size
        Side (or ``(height, width)``) of the finest images; each tissue varies by ``size_jitter``.
    size_jitter
        Relative variation of the image sides between tissues (0 for exact sizes).
    n_channels
        Multiplex panel size (at least 3, at most ``len(MARKERS)``).
    n_cells
        Cells per tissue, approximately.
    n_levels
        Pyramid levels per image (1 = none).
    dtype
        Multiplex image dtype (unsigned integers or floats); H&E is always ``uint8``.
    he_tissues
        Positions (0-based) of the tissues that get an H&E; default about half of them.
    standardization, tiling
        Compute the standardization statistics and the default tiling.
    overwrite
        Replace an existing cohort (else :class:`~spora_sd.errors.TargetExistsError`).
    progress
        Show progress bars.

    Returns
    -------
    Path
        The cohort folder ``root/name``.

    Examples
    --------
    >>> import tempfile
    >>> from spora_sd.io.cohort import open_cohort
    >>> root = make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=3, image_size=(80, 120), n_cells=15,
    ...                              resolutions=(1.0, 2.0), modalities=("imc",))
    >>> cohort = open_cohort(root)
    >>> cohort.resolutions("imc"), cohort.tissues["alignment"].isna().all()
    ([1.0, 2.0], np.True_)
    """
    name = layout.check_dataset_key(name)
    multiplex, with_he = _check_modalities(modalities)
    if isinstance(n_tissues, bool) or not isinstance(n_tissues, int) or n_tissues < 1:
        raise InvalidArgumentError(f"n_tissues must be a positive integer, got {n_tissues!r}")
    if multiplex is not None and (
        isinstance(n_channels, bool) or not isinstance(n_channels, int) or not 3 <= n_channels <= len(MARKERS)
    ):
        raise InvalidArgumentError(f"n_channels must be between 3 and {len(MARKERS)}, got {n_channels!r}")
    if not isinstance(n_cells, int) or n_cells < 0:
        raise InvalidArgumentError(f"n_cells must be a non-negative integer, got {n_cells!r}")
    if not isinstance(n_levels, int) or n_levels < 1:
        raise InvalidArgumentError(f"n_levels must be a positive integer, got {n_levels!r}")
    try:
        image_dtype = np.dtype(dtype)
    except TypeError:
        raise InvalidArgumentError(f"dtype must be an unsigned integer or float dtype, got {dtype!r}") from None
    if image_dtype.kind not in "uf":
        raise InvalidArgumentError(f"dtype must be an unsigned integer or float dtype, got {dtype!r}")
    if not resolutions:
        raise InvalidArgumentError("resolutions must name at least one resolution (microns per pixel)")
    try:
        mpps = tuple(sorted({float(r) for r in resolutions}))
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"resolutions must be numbers (microns per pixel), got {resolutions!r}") from None
    for mpp in mpps:
        layout.format_resolution(mpp)  # refuses what has no folder name
    base_height, base_width = _sizes(image_size)
    if min(base_height, base_width) < 8:
        raise InvalidArgumentError(f"image_size must be at least 8 pixels, got {image_size!r}")

    target = Path(root) / name
    if target.exists() and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    jitter = rng.uniform(-size_jitter, size_jitter, size=(n_tissues, 2))
    shapes = [(max(8, round(base_height * (1 + jy))), max(8, round(base_width * (1 + jx)))) for jy, jx in jitter]
    cell_counts = [max(0, round(n_cells * f)) for f in rng.uniform(0.85, 1.15, n_tissues)]
    if not with_he:
        he_set: set[int] = set()
    elif multiplex is None:
        he_set = set(range(n_tissues))
    elif he_tissues is None:
        he_set = {int(i) for i in rng.permutation(n_tissues)[: math.ceil(n_tissues / 2)]}
    else:
        he_set = {int(i) for i in he_tissues}
        if not he_set <= set(range(n_tissues)):
            raise InvalidArgumentError(f"he_tissues must be positions in range({n_tissues}), got {sorted(he_set)}")

    patients = _patients(rng, name, n_tissues)
    tissue_ids = patients.tissue_ids

    panel = tuple(range(n_channels)) if multiplex is not None else ()
    ragged = n_channels - 2 if multiplex is not None and n_tissues > 1 else None
    lacking = {n_tissues - 1} | {i for i in range(n_tissues) if i % 10 == 9} if ragged is not None else set()
    failed = n_channels - 1 if multiplex is not None else None

    # Built under a hidden sibling folder (io.atomic.export_workspace: the writer lock, an in-progress
    # marker, the content manifest, an atomic exchange with an existing cohort); the cohort inside it
    # already has its final name, so the tables' tissue ids and the readers agree.
    with export_workspace(target, overwrite=overwrite) as cohort_dir:
        jobs = [
            _TissueJob(
                root=str(cohort_dir),
                index=i,
                seed=int(seed),
                tissue_id=tissue_ids[i],
                shape=shapes[i],
                n_cells=cell_counts[i],
                multiplex=multiplex,
                panel=panel,
                measured=tuple(not (i in lacking and j == ragged) for j in range(len(panel))),
                failed=failed,
                has_he=i in he_set,
                resolutions=mpps,
                n_levels=n_levels,
                dtype=image_dtype.str,
            )
            for i in range(n_tissues)
        ]
        cell_tables = map_tissues(_render_tissue, jobs, progress=progress, description="synthetic tissues")
        tissues = _tissues_table(patients, [multiplex] if multiplex else [], with_he, he_set, mpps[0])
        _write_tables(CohortPaths(cohort_dir), name, jobs, cell_tables, tissues)
        if multiplex is not None and standardization:
            from spora_sd.stats.standardization import compute_standardizations

            for mpp in mpps:
                compute_standardizations(cohort_dir, multiplex, resolution=mpp, progress=progress)
        if tiling:
            from spora_sd.stats.tiling import compute_tiling

            for mpp in mpps:
                sizes = [tuple(math.ceil(s / (mpp / mpps[0])) for s in shape) for shape in shapes]
                compute_tiling(cohort_dir, tile_size=_tile_size_for(sizes), resolution=mpp, progress=progress)
        write_manifest(cohort_dir)  # the last file: sizes and checksums of all the others
    logger.info("wrote synthetic cohort %s (%d tissues)", target, n_tissues)
    return target


@dataclass(frozen=True)
class _Patients:
    """Who the tissues come from, and the clinical columns (one entry per patient)."""

    tissue_ids: list[str]
    patient_of: list[int]  # per tissue
    specimen_of: list[int]  # per tissue
    raw_ids: list[str]
    split: np.ndarray
    grade: np.ndarray
    subtype: np.ndarray
    age: np.ndarray


def _patients(rng: np.random.Generator, name: str, n_tissues: int) -> _Patients:
    """Tissues 0 and 1 are two specimens of the first patient; every other tissue has its own patient."""
    patient_of = [max(0, i - 1) for i in range(n_tissues)]
    n_patients = patient_of[-1] + 1
    raw_ids = [f"SYN-P{p:04d}" for p in range(n_patients)]
    hashes = [layout.patient_hash(raw, name) for raw in raw_ids]
    if len(set(hashes)) != len(hashes):
        raise InvalidArgumentError("two synthetic patients hash to the same patient id; use another dataset name")
    specimen_of = [0 if i == 0 or patient_of[i] != patient_of[i - 1] else 1 for i in range(n_tissues)]
    tissue_ids = [layout.compose_tissue_id(name, hashes[p], s) for p, s in zip(patient_of, specimen_of, strict=True)]
    test = rng.permutation(n_patients)[: max(1, round(0.25 * n_patients)) if n_patients > 1 else 0]
    return _Patients(
        tissue_ids=tissue_ids,
        patient_of=patient_of,
        specimen_of=specimen_of,
        raw_ids=raw_ids,
        split=np.where(np.isin(np.arange(n_patients), test), "test", "train"),
        grade=rng.integers(1, 4, n_patients),
        subtype=rng.choice(np.array(_SUBTYPES, dtype=object), n_patients),
        age=rng.integers(35, 86, n_patients),
    )


def _tissues_table(
    patients: _Patients, multiplex: list[str], with_he: bool, he_set: set[int], finest: float
) -> pd.DataFrame:
    """One row per (tissue, modality); ``alignment`` is missing when the cohort has one modality."""
    modalities = multiplex + ([layout.HE] if with_he else [])
    rows = []
    for i, tissue_id in enumerate(patients.tissue_ids):
        has = {m: (m != layout.HE or i in he_set) for m in modalities}
        present = [m for m in modalities if has[m]]
        p = patients.patient_of[i]
        for modality in present:
            rows.append(
                {
                    "tissue_id": tissue_id,
                    "patient_id": layout.parse_tissue_id(tissue_id).patient_id,
                    "specimen_id": f"{patients.specimen_of[i]:04d}",
                    "modality": modality,
                    "alignment": None if len(modalities) == 1 else ("exact" if len(present) > 1 else "no alignment"),
                    "biopsy_id": f"SYN-B{p:04d}",
                    **{f"mpp_{m}": (finest if has[m] else np.nan) for m in modalities},
                    "split": str(patients.split[p]),
                    "original_patient_id": patients.raw_ids[p],
                    "grade": int(patients.grade[p]),
                    "subtype": str(patients.subtype[p]),
                    "age": int(patients.age[p]),
                }
            )
    return pd.DataFrame(rows)


def _write_tables(
    paths: CohortPaths, name: str, jobs: list[_TissueJob], cell_tables: list[pd.DataFrame], tissues: pd.DataFrame
) -> None:
    """The cohort's tables: tissues, label encoder, cells and, for a multiplex modality, its channel tables."""
    write_table(tissues, paths.tissues, "tissues", index=False, dataset=name)
    finest = jobs[0].resolutions[0]
    label_encoder = pd.DataFrame(
        {"name": [t.name for t in CELL_TYPES], "id": np.arange(1, len(CELL_TYPES) + 1, dtype=np.int64)}
    )
    write_table(label_encoder, paths.label_encoder(finest, CELL_TYPES_TASK), "label_encoder", index=False)

    tissue_ids = [job.tissue_id for job in jobs]
    panel = [MARKERS[i] for i in jobs[0].panel]
    names = [m.name for m in panel]
    cells = pd.concat(cell_tables, ignore_index=True)
    cells["tissue_id"] = pd.Categorical(cells["tissue_id"], categories=tissue_ids)
    write_table(cells, paths.cells, "cells", index=False, channels=names or None, dataset=name)
    multiplex = jobs[0].multiplex
    if multiplex is None:
        return
    channels = pd.DataFrame(
        {
            "channel_name": names,
            "qc_pass": [j != jobs[0].failed for j in range(len(panel))],
            "uniprot_id": [m.uniprot_id for m in panel],
            "is_nuclear_marker": [m.is_nuclear_marker for m in panel],
        }
    )
    write_table(channels, paths.channels(multiplex), "channels", index=False)
    per_tissue = pd.DataFrame(
        [job.measured for job in jobs], index=pd.Index(tissue_ids, name="tissue_id"), columns=names
    )
    write_table(per_tissue, paths.channels_per_tissue(multiplex), "channels_per_tissue", channels=names, dataset=name)
