"""Vitessce view configs, built with the ``vitessce`` Python package: one tissue per config.

The layout: a spatial view (the image, with the cell outlines coloured by cell type) next to the
layer controller (channels, colours, contrast), the cell sets (``cell_type``, ``cell_category``) and
a heatmap of the cells' mean marker intensities grouped by the selected cell sets.

``vitessce`` is an optional dependency installed with ``--no-deps``: every release to date (3.8.4)
caps ``zarr<3`` in its metadata although the config builder runs with Zarr 3 (spora-sd needs Zarr
3), so pip could not install both as declared. :func:`require_vitessce` says how to install it.

Examples
--------
>>> spec = TissueView("t1", "/d/t1/image.zarr", ["DNA1", "CD3E"], [0, 1], {"DNA1": (0, 50), "CD3E": (0, 9)})
>>> config = tissue_config(spec).to_dict()
>>> config["datasets"][0]["files"][0]["fileType"]
'image.ome-zarr'
>>> sorted({v["component"] for v in config["layout"]})
['layerControllerBeta', 'spatialBeta']
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spora_sd.errors import InvalidArgumentError
from spora_sd.viewer.contrast import PALETTE

if TYPE_CHECKING:
    from vitessce import VitessceConfig

__all__ = ["SCHEMA_VERSION", "TissueView", "require_vitessce", "tissue_config"]

#: Colours of the cell types (Tableau 10), repeated when there are more types.
CELL_TYPE_COLORS = (
    (78, 121, 167),
    (242, 142, 43),
    (225, 87, 89),
    (118, 183, 178),
    (89, 161, 79),
    (237, 201, 72),
    (176, 122, 161),
    (255, 157, 167),
    (156, 117, 95),
    (186, 176, 172),
)
#: The newest view-config schema of the ``vitessce`` Python package that the bundled JavaScript reads.
SCHEMA_VERSION = "1.0.17"
OBS_TYPE = "cell"
#: Outline width of the cell masks: Vitessce's bitmask shader scales it by 150 texels, so 1.0 fills
#: the cells; 0.05 draws a line about one pixel wide at the zoom the view opens with.
OUTLINE_WIDTH = 0.05
FEATURE_TYPE = "marker"
_INSTALL = 'pip install "black>=24" && pip install --no-deps "vitessce>=3.8.4"'


@dataclass
class TissueView:
    """What the view of one tissue shows, and where the browser fetches it (URLs or paths).

    Parameters
    ----------
    name
        The tissue id (the config's name).
    image_url
        The OME-Zarr image.
    channels
        The image's channel names, in image order.
    shown
        Indices of the channels visible at start (at most six).
    windows
        ``(low, high)`` contrast per channel name.
    labels_url, cells_url
        The cell outlines (OME-Zarr labels) and the cells (AnnData Zarr), when the tissue has them.
    set_columns
        Columns of the cells store that become cell sets (the first colours the outlines).
    features
        Marker columns in the cells store's ``X`` (the heatmap); empty for none.
    cell_types
        The values of the first set column: the sets selected (and colouring the outlines) at start.
    rgb
        Whether the image is an RGB H&E (drawn as is, no channel colours).
    """

    name: str
    image_url: str
    channels: Sequence[str]
    shown: Sequence[int]
    windows: Mapping[str, tuple[float, float]]
    labels_url: str | None = None
    cells_url: str | None = None
    set_columns: Sequence[str] = field(default_factory=tuple)
    features: Sequence[str] = field(default_factory=tuple)
    cell_types: Sequence[str] = field(default_factory=tuple)
    rgb: bool = False


def require_vitessce() -> Any:
    """Import ``vitessce``, or fail with how to install it (and why ``--no-deps``)."""
    try:
        with warnings.catch_warnings():
            # vitessce warns on import that its widget and export extras are missing; we use neither
            warnings.simplefilter("ignore", UserWarning)
            import vitessce
    except ImportError as exc:
        raise InvalidArgumentError(
            f"the Vitessce view needs the `vitessce` Python package ({exc}): {_INSTALL} (with --no-deps: "
            "its metadata caps zarr<3, which spora-sd cannot use; the config builder works with Zarr 3)"
        ) from None
    return vitessce


def _image_channels(spec: TissueView, cl: Any) -> Any:
    channels = []
    for k, i in enumerate(spec.shown):
        name = spec.channels[i]
        lo, hi = spec.windows.get(name, (0.0, 1.0))
        channels.append(
            {
                "spatialTargetC": int(i),
                "spatialChannelColor": list(PALETTE[k % len(PALETTE)]),
                "spatialChannelVisible": True,
                "spatialChannelOpacity": 1.0,
                "spatialChannelWindow": [float(lo), float(hi)],
            }
        )
    return cl(channels)


def set_name(column: str) -> str:
    """The name of a cell-set hierarchy in the view (``cell_type`` -> ``cell type``).

    >>> set_name("cell_type")
    'cell type'
    """
    return column.replace("_", " ")


def tissue_config(spec: TissueView) -> VitessceConfig:
    """The Vitessce config of one tissue (see the module's docstring for the layout)."""
    vitessce = require_vitessce()
    cl = vitessce.CoordinationLevel
    vc = vitessce.VitessceConfig(schema_version=SCHEMA_VERSION, name=spec.name)
    dataset = vc.add_dataset(name=spec.name, uid="A")
    dataset.add_object(vitessce.ImageOmeZarrWrapper(img_url=spec.image_url, coordination_values={"fileUid": "image"}))
    if spec.labels_url:
        dataset.add_object(
            vitessce.ObsSegmentationsOmeZarrWrapper(
                img_url=spec.labels_url, coordination_values={"fileUid": "cells", "obsType": OBS_TYPE}
            )
        )
    if spec.cells_url:
        dataset.add_object(
            vitessce.AnnDataWrapper(
                adata_url=spec.cells_url,
                obs_feature_matrix_path="X" if spec.features else None,
                obs_set_paths=[f"obs/{c}" for c in spec.set_columns] or None,
                obs_set_names=[set_name(c) for c in spec.set_columns] or None,
                coordination_values={"obsType": OBS_TYPE, "featureType": FEATURE_TYPE},
            )
        )
    # a 12-column grid: the image large on the left, the layer controller (channels) on the right,
    # the cell sets and the heatmap below
    has_sets = bool(spec.cells_url and spec.set_columns)
    has_heatmap = bool(spec.cells_url and spec.features)
    top = 8 if has_sets or has_heatmap else 12
    spatial = vc.add_view("spatialBeta", dataset=dataset, x=0, y=0, w=8, h=top)
    controller = vc.add_view("layerControllerBeta", dataset=dataset, x=8, y=0, w=4, h=top)
    links: dict[str, Any] = {
        "imageLayer": cl(
            [
                {
                    "fileUid": "image",
                    "spatialLayerOpacity": 1.0,
                    "spatialLayerVisible": True,
                    "photometricInterpretation": "RGB" if spec.rgb else "BlackIsZero",
                    "imageChannel": _image_channels(spec, cl),
                }
            ]
        )
    }
    others: list[Any] = []
    if spec.labels_url:
        segmentation: dict[str, Any] = {
            "obsType": OBS_TYPE,
            "spatialTargetC": 0,
            "spatialChannelColor": [255, 255, 255],
            "spatialChannelOpacity": 1.0,
            "spatialChannelVisible": True,
            "spatialSegmentationFilled": False,
            "spatialSegmentationStrokeWidth": OUTLINE_WIDTH,
            "obsColorEncoding": "cellSetSelection" if spec.set_columns else "spatialChannelColor",
        }
        links["segmentationLayer"] = cl(
            [
                {
                    "fileUid": "cells",
                    "spatialLayerOpacity": 1.0,
                    "spatialLayerVisible": True,
                    "segmentationChannel": cl([segmentation]),
                }
            ]
        )
    selection = None
    if has_sets and spec.cell_types:
        # the cell types are selected, each with its colour, from the start: the outlines are
        # coloured by cell type at once (Vitessce leaves them grey until a set is selected)
        hierarchy = set_name(spec.set_columns[0])
        selection = vc.add_coordination("obsSetSelection", "obsSetColor")
        selection[0].set_value([[hierarchy, t] for t in spec.cell_types])
        selection[1].set_value(
            [
                {"path": [hierarchy, t], "color": list(CELL_TYPE_COLORS[i % len(CELL_TYPE_COLORS)])}
                for i, t in enumerate(spec.cell_types)
            ]
        )
        if "segmentationLayer" in links:
            segmentation["obsSetSelection"] = selection[0]
            segmentation["obsSetColor"] = selection[1]
    if has_sets:
        others.append(vc.add_view("obsSets", dataset=dataset, x=0, y=top, w=4 if has_heatmap else 12, h=12 - top))
    if has_heatmap:
        x = 4 if has_sets else 0
        others.append(vc.add_view("heatmap", dataset=dataset, x=x, y=top, w=12 - x, h=12 - top))
    vc.link_views_by_dict(
        [spatial, controller],
        links,
        meta=True,
        scope_prefix=vitessce.get_initial_coordination_scope_prefix("A", "image"),
    )
    # the cell-set view, the heatmap and the outlines share the cell type and the selected sets
    if others:
        vc.link_views([spatial, controller, *others], ["obsType", "featureType"], [OBS_TYPE, FEATURE_TYPE])
    if selection is not None:
        for view in others:
            view.use_coordination(*selection)
    return vc
