"""Every path of a cohort's tree, built from checked names (:class:`CohortPaths`).

No name read from a cohort becomes a path component before :mod:`spora_sd.layout.names` has checked
it, so a tissue id or task from an untrusted table cannot escape the cohort's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from spora_sd.layout.names import (
    _PARAM_RE,
    _STRATEGY_RE,
    CELL_MASKS_DIR,
    CELLS_FILE,
    CHANNELS_FILE,
    CHANNELS_PER_TISSUE_FILE,
    IHC_DIR,
    IHC_PREFIX,
    IMAGE_SUFFIX,
    IMAGES_DIR,
    INSTANCES_TASK,
    LABEL_ENCODER_FILE,
    MANIFEST_FILE,
    MASK_SUFFIX,
    METADATA,
    SEGMENTATIONS_DIR,
    STANDARDIZATION_DIR,
    STANDARDIZATION_OPTIONAL,
    STANDARDIZATION_REQUIRED,
    TABLE_SUFFIX,
    TILING_DIR,
    TISSUE_MASKS_DIR,
    TISSUES_FILE,
    _check_simple,
    _fail,
    check_modality,
    check_task,
    check_tissue_id,
    format_resolution,
    standardization_param_spellings,
)

__all__ = ["CohortPaths", "parse_tile_filename", "tissue_id_from_filename"]


@dataclass(frozen=True)
class CohortPaths:
    """Every path of a cohort's tree, built from checked names.

    >>> p = CohortPaths("/data/jackson2020single")
    >>> p.image("imc", 1.0, "jackson2020single_a1b2c3d4_0000").as_posix()
    '/data/jackson2020single/imc/1_0mpp/images/jackson2020single_a1b2c3d4_0000.ome.zarr'
    >>> p.modality_dir("ihc_CD3E").as_posix()
    '/data/jackson2020single/ihc/ihc_CD3E'
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        # a remote root (a upath.UPath: s3://, https://) is kept as it is: it joins like a Path
        remote = not isinstance(root, str | Path) and hasattr(root, "protocol") and hasattr(root, "fs")
        object.__setattr__(self, "root", root if remote else Path(root))
        # folder -> path, so that per-tissue paths cost one join: a remote (UPath) join costs about
        # 0.3 ms, and an open builds a path for every image of a cohort of up to thousands
        object.__setattr__(self, "_images_dirs", {})

    @property
    def dataset(self) -> str:
        """The dataset key: the folder's name."""
        return self.root.name

    # metadata ------------------------------------------------------------------------------------
    @property
    def metadata_dir(self) -> Path:
        return self.root / METADATA

    @property
    def tissues(self) -> Path:
        return self.metadata_dir / TISSUES_FILE

    @property
    def cells(self) -> Path:
        return self.metadata_dir / CELLS_FILE

    @property
    def manifest(self) -> Path:
        """The content manifest (optional; written by every export, see :mod:`spora_sd.io.manifest`)."""
        return self.metadata_dir / MANIFEST_FILE

    # modalities ----------------------------------------------------------------------------------
    def modality_dir(self, modality: str) -> Path:
        check_modality(modality)
        if modality.startswith(IHC_PREFIX):
            return self.root / IHC_DIR / modality
        return self.root / modality

    def channels(self, modality: str) -> Path:
        return self.modality_dir(modality) / CHANNELS_FILE

    def channels_per_tissue(self, modality: str) -> Path:
        return self.modality_dir(modality) / CHANNELS_PER_TISSUE_FILE

    def resolution_dir(self, modality: str, mpp: float) -> Path:
        return self.modality_dir(modality) / format_resolution(mpp)

    def images_dir(self, modality: str, mpp: float) -> Path:
        key = (modality, mpp)
        found = self._images_dirs.get(key)  # type: ignore[attr-defined]
        if found is None:
            found = self._images_dirs[key] = self.resolution_dir(modality, mpp) / IMAGES_DIR  # type: ignore[attr-defined]
        return found

    def image(self, modality: str, mpp: float, tissue_id: str) -> Path:
        return self.images_dir(modality, mpp) / f"{check_tissue_id(tissue_id)}{IMAGE_SUFFIX}"

    def standardization_root(self, modality: str, mpp: float) -> Path:
        return self.resolution_dir(modality, mpp) / STANDARDIZATION_DIR

    def standardization_dir(self, modality: str, mpp: float, method: str, param: str) -> Path:
        _check_simple("standardization method", method, _STRATEGY_RE)
        _check_simple("standardization parameter", param, _PARAM_RE)
        return self.standardization_root(modality, mpp) / method / param

    def standardization_candidates(self, modality: str, mpp: float, method: str, param: str) -> list[Path]:
        """Both spellings of a standardization folder: ``uq_0.99`` and the reader's ``uq_0.99_image``."""
        return [self.standardization_dir(modality, mpp, method, p) for p in standardization_param_spellings(param)]

    def standardization_file(self, folder: Path, name: str) -> Path:
        if name not in STANDARDIZATION_REQUIRED + STANDARDIZATION_OPTIONAL:
            raise _fail("standardization file", name, "not a file of spec §6")
        return folder / f"{name}{TABLE_SUFFIX}"

    # segmentations -------------------------------------------------------------------------------
    def segmentations_dir(self, mpp: float) -> Path:
        return self.root / SEGMENTATIONS_DIR / format_resolution(mpp)

    def tissue_masks_dir(self, mpp: float) -> Path:
        return self.segmentations_dir(mpp) / TISSUE_MASKS_DIR

    def tissue_mask(self, mpp: float, tissue_id: str) -> Path:
        return self.tissue_masks_dir(mpp) / f"{check_tissue_id(tissue_id)}{MASK_SUFFIX}"

    def cell_masks_dir(self, mpp: float) -> Path:
        return self.segmentations_dir(mpp) / CELL_MASKS_DIR

    def instance_masks_dir(self, mpp: float) -> Path:
        return self.cell_masks_dir(mpp) / INSTANCES_TASK

    def instance_mask(self, mpp: float, tissue_id: str) -> Path:
        return self.instance_masks_dir(mpp) / f"{check_tissue_id(tissue_id)}{MASK_SUFFIX}"

    def task_dir(self, mpp: float, task: str) -> Path:
        return self.cell_masks_dir(mpp) / check_task(task)

    def semantic_mask(self, mpp: float, task: str, tissue_id: str) -> Path:
        return self.task_dir(mpp, task) / f"{check_tissue_id(tissue_id)}{MASK_SUFFIX}"

    def label_encoder(self, mpp: float, task: str) -> Path:
        return self.task_dir(mpp, task) / LABEL_ENCODER_FILE

    # tiling --------------------------------------------------------------------------------------
    def tiling_dir(self, mpp: float, strategy: str) -> Path:
        _check_simple("tiling strategy", strategy, _STRATEGY_RE)
        return self.root / TILING_DIR / format_resolution(mpp) / strategy

    def tile_coordinates(self, mpp: float, strategy: str, size: int) -> Path:
        return self.tiling_dir(mpp, strategy) / f"{_check_size(size)}_tile_coordinates.parquet"

    def tile_stats(self, mpp: float, strategy: str, size: int) -> Path:
        return self.tiling_dir(mpp, strategy) / f"{_check_size(size)}_tile_stats.parquet"


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise _fail("tile size", size, "must be a positive integer")
    return size


def tissue_id_from_filename(name: str, suffix: str) -> str:
    """The tissue id of an image or mask file name, checked (raises :class:`LayoutNameError`)."""
    if not name.endswith(suffix):
        raise _fail("file name", name, f"must end with {suffix!r}")
    return check_tissue_id(name[: -len(suffix)])


_TILE_FILE_RE = re.compile(r"^([0-9]+)_tile_(coordinates|stats)\.parquet$", re.ASCII)


def parse_tile_filename(name: str) -> tuple[int, str]:
    """``"256_tile_coordinates.parquet"`` -> ``(256, "coordinates")``."""
    match = _TILE_FILE_RE.fullmatch(name)
    if match is None:
        raise _fail("tiling file", name, "expected '<size>_tile_coordinates.parquet' or '<size>_tile_stats.parquet'")
    return int(match.group(1)), match.group(2)
