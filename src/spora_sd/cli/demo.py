"""The main job on an embedded default, run by ``make demo`` / ``spora-sd demo``.

1. write a synthetic cohort (IMC + registered H&E, ragged panel) and validate it;
2. convert it to SpatialData (lazy) and write it as ``demo.zarr``;
3. squidpy per tissue: spatial neighbours and neighbourhood enrichment; log the top interactions;
4. plot one tissue (image + cell outlines) to a PNG;
5. register the cohort in a local LaminDB instance, search it by tissue and disease, load it back;
6. export the SpatialData back to a spora cohort and validate that.

Each step logs what it did; the function returns a dict of the paths and figures it produced.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from spora_sd.cli.errors import handle_errors

logger = logging.getLogger(__name__)

DEMO_DATASET = "demo2025synthetic"
EXPORT_DATASET = "demo2025roundtrip"


def _step(title: str) -> float:
    logger.info("── %s", title)
    return time.perf_counter()


def top_interactions(adata: Any, cluster_key: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` most enriched cell-type pairs of squidpy's ``nhood_enrichment`` z-scores."""
    z = adata.uns[f"{cluster_key}_nhood_enrichment"]["zscore"]
    cats = list(adata.obs[cluster_key].cat.categories)
    rows = [
        {"a": cats[i], "b": cats[j], "zscore": float(z[i, j])}
        for i in range(len(cats))
        for j in range(i, len(cats))
        if np.isfinite(z[i, j])
    ]
    return pd.DataFrame(rows).sort_values("zscore", ascending=False).head(n).reset_index(drop=True)


def plot_tissue(sdata: Any, tissue_id: str, out: Path) -> Path:
    """Render one tissue's IMC image (first channels) with its cell outlines to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)

    from spora_sd.convert.element_names import image_name, labels_name

    img = image_name(tissue_id, "imc")
    labels = labels_name(tissue_id, "cells")
    from spatialdata.models import get_channel_names

    names = [str(c) for c in get_channel_names(sdata.images[img])]
    channel = next((c for c in names if c.startswith("DNA")), names[0])  # nuclei show the cells best
    fig, ax = plt.subplots(figsize=(6, 6))
    (
        sdata.pl.render_images(img, channel=channel, cmap="magma")
        .pl.render_labels(labels, outline_alpha=1.0, fill_alpha=0.0, contour_px=2)
        .pl.show(coordinate_systems=tissue_id, ax=ax, title=f"{tissue_id}: {channel} + cell outlines")
    )
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def isolate_lamin_settings(folder: Path) -> None:
    """Keep the demo's LaminDB settings and cache under ``folder``, away from the user's ``~/.lamin``.

    The demo recreates its instance on every run; registering it in the user's own settings would
    leave a stale instance behind (and clash with a demo run from another folder). lamindb reads
    these variables when it is first imported, so this must run before that.
    """
    import os
    import sys

    if "lamindb_setup" in sys.modules:
        logger.warning("lamindb is already imported: the demo instance goes into your own LaminDB settings")
        return
    os.environ["LAMIN_SETTINGS_DIR"] = str(folder)
    os.environ["LAMIN_CACHE_DIR"] = str(folder / "cache")
    logger.info("LaminDB settings for the demo: %s (export LAMIN_SETTINGS_DIR=%s to use the instance)", folder, folder)


def run_demo(out: str | Path = "spora-demo", *, n_tissues: int = 4, lamin: bool = True) -> dict[str, Any]:
    """Run the demo under ``out`` (recreated on every run); returns what it produced."""
    import squidpy as sq

    import spora_sd
    from spora_sd.analysis import spatial_neighbors
    from spora_sd.convert.element_names import CELL_TABLE

    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    results: dict[str, Any] = {"out": out}

    t0 = _step("1. synthetic cohort")
    cohort_path = spora_sd.make_synthetic_cohort(
        out / "cohorts", name=DEMO_DATASET, n_tissues=n_tissues, image_size=384, n_cells=300, n_channels=12
    )
    report = spora_sd.validate(cohort_path)
    report.raise_if_invalid()
    cohort = spora_sd.open_cohort(cohort_path)
    logger.info("%r is valid (%s); %.1f s", cohort, report.checked, time.perf_counter() - t0)
    results["cohort"] = cohort_path

    t0 = _step("2. to_spatialdata")
    sdata = spora_sd.to_spatialdata(cohort_path)
    logger.info("%s", sdata)
    zarr_path = out / "demo.zarr"
    sdata.write(zarr_path)
    logger.info("wrote %s; %.1f s", zarr_path, time.perf_counter() - t0)
    results["sdata"] = zarr_path

    t0 = _step("3. squidpy neighbourhood enrichment, per tissue")
    table = sdata.tables[CELL_TABLE]
    spatial_neighbors(table, library_key="tissue_id", coord_type="generic", delaunay=True)  # squidpy's, per tissue
    sq.gr.nhood_enrichment(table, cluster_key="cell_type", seed=0, n_perms=200, show_progress_bar=False)
    top = top_interactions(table, "cell_type")
    logger.info("top interactions (z-score):\n%s", top.to_string(index=False))
    results["top_interactions"] = top
    logger.info("%.1f s", time.perf_counter() - t0)

    t0 = _step("4. plot one tissue")
    png = plot_tissue(sdata, cohort.tissue_ids("imc")[0], out / "tissue.png")
    logger.info("saved %s; %.1f s", png, time.perf_counter() - t0)
    results["plot"] = png

    if lamin:
        t0 = _step("5. LaminDB: register, search, load")
        isolate_lamin_settings(out / "lamin-settings")
        from spora_sd.lamin import demo as lamin_demo

        lamin_demo(cohort_path, out / "lamin")
        results["lamin"] = out / "lamin"
        logger.info("%.1f s", time.perf_counter() - t0)

    t0 = _step("6. export back to a spora cohort")
    exported = spora_sd.from_spatialdata(sdata, out / "cohorts" / EXPORT_DATASET)
    report = spora_sd.validate(exported)
    report.raise_if_invalid()
    logger.info("exported %s: valid (%s); %.1f s", exported, report.checked, time.perf_counter() - t0)
    results["export"] = exported
    return results


@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("spora-demo"),
) -> None:
    """The main job on an embedded default: synthetic cohort -> SpatialData -> squidpy -> LaminDB -> cohort.

    → Python: ``spora_sd.cli.demo.run_demo(out)``
    """
    run_demo(out)
