// The Vitessce plugins of spora-sd's view: ONLY the view types, file types and joint file types that
// its configs use (src/spora_sd/viewer/config.py), with all of Vitessce's coordination types, so that
// esbuild leaves every other view (plots, vega, scatterplots, genomic profiles, Neuroglancer, 3D)
// and loader out of the bundle. @vitessce/all's base-plugins.js registers all of them.
import {
  ALT_ZARR_STORE_TYPES,
  COMPONENT_COORDINATION_TYPES,
  DataType,
  FileType,
  ViewType,
} from "@vitessce/constants-internal";
import { PluginFileType, PluginJointFileType, PluginViewType } from "@vitessce/plugins";
import {
  anndataZarrSchema,
  featureLabelsAnndataSchema,
  imageOmeZarrSchema,
  obsEmbeddingAnndataSchema,
  obsFeatureColumnsAnndataSchema,
  obsFeatureMatrixAnndataSchema,
  obsLabelsAnndataSchema,
  obsLocationsAnndataSchema,
  obsPointsAnndataSchema,
  obsSegmentationsAnndataSchema,
  obsSegmentationsOmeZarrSchema,
  obsSetsAnndataSchema,
  obsSpotsAnndataSchema,
  z,
} from "@vitessce/schemas";
import { SpatialBetaSubscriber } from "@vitessce/spatial-beta";
import { LayerControllerBetaSubscriber } from "@vitessce/layer-controller-beta";
import { HeatmapSubscriber } from "@vitessce/heatmap";
import { ObsSetsManagerSubscriber } from "@vitessce/obs-sets-manager";
import {
  AnnDataSource,
  FeatureLabelsAnndataLoader,
  ObsEmbeddingAnndataLoader,
  ObsFeatureColumnsAnndataLoader,
  ObsFeatureMatrixAnndataLoader,
  ObsLabelsAnndataLoader,
  ObsLocationsAnndataLoader,
  ObsPointsAnndataLoader,
  ObsSegmentationsAnndataLoader,
  ObsSetsAnndataLoader,
  ObsSpotsAnndataLoader,
  ZarrDataSource,
} from "@vitessce/zarr";
import { OmeZarrAsObsSegmentationsLoader, OmeZarrLoader } from "@vitessce/spatial-zarr";
import { expandAnndataZarr } from "@vitessce/all/dist-tsc/joint-file-types.js";
import { baseCoordinationTypes } from "@vitessce/all/dist-tsc/base-plugins.js";

const view = (name, component) => new PluginViewType(name, component, COMPONENT_COORDINATION_TYPES[name]);

export const viewTypes = [
  view(ViewType.SPATIAL_BETA, SpatialBetaSubscriber),
  view(ViewType.LAYER_CONTROLLER_BETA, LayerControllerBetaSubscriber),
  view(ViewType.HEATMAP, HeatmapSubscriber),
  view(ViewType.OBS_SETS, ObsSetsManagerSubscriber),
];

// a Zarr file type and its .zip and .h5ad variants (as @vitessce/all's makeZarrFileTypes)
const zarr = (name, dataType, Loader, Source, schema) => [
  new PluginFileType(name, dataType, Loader, Source, schema),
  ...Object.entries(ALT_ZARR_STORE_TYPES[name] ?? {}).map(
    ([store, alt]) =>
      new PluginFileType(alt, dataType, Loader, Source, store === "h5ad" ? schema.extend({ refSpecUrl: z.string() }) : schema),
  ),
];

// [file type, data type, loader, schema] of the AnnData-Zarr file types
const ANNDATA_FILE_TYPES = [
  [FileType.OBS_SETS_ANNDATA_ZARR, DataType.OBS_SETS, ObsSetsAnndataLoader, obsSetsAnndataSchema],
  [FileType.OBS_EMBEDDING_ANNDATA_ZARR, DataType.OBS_EMBEDDING, ObsEmbeddingAnndataLoader, obsEmbeddingAnndataSchema],
  [FileType.OBS_SPOTS_ANNDATA_ZARR, DataType.OBS_SPOTS, ObsSpotsAnndataLoader, obsSpotsAnndataSchema],
  [FileType.OBS_POINTS_ANNDATA_ZARR, DataType.OBS_POINTS, ObsPointsAnndataLoader, obsPointsAnndataSchema],
  [FileType.OBS_LOCATIONS_ANNDATA_ZARR, DataType.OBS_LOCATIONS, ObsLocationsAnndataLoader, obsLocationsAnndataSchema],
  [FileType.OBS_LABELS_ANNDATA_ZARR, DataType.OBS_LABELS, ObsLabelsAnndataLoader, obsLabelsAnndataSchema],
  [FileType.OBS_FEATURE_MATRIX_ANNDATA_ZARR, DataType.OBS_FEATURE_MATRIX, ObsFeatureMatrixAnndataLoader, obsFeatureMatrixAnndataSchema],
  [FileType.OBS_FEATURE_COLUMNS_ANNDATA_ZARR, DataType.OBS_FEATURE_MATRIX, ObsFeatureColumnsAnndataLoader, obsFeatureColumnsAnndataSchema],
  [FileType.OBS_SEGMENTATIONS_ANNDATA_ZARR, DataType.OBS_SEGMENTATIONS, ObsSegmentationsAnndataLoader, obsSegmentationsAnndataSchema],
  [FileType.FEATURE_LABELS_ANNDATA_ZARR, DataType.FEATURE_LABELS, FeatureLabelsAnndataLoader, featureLabelsAnndataSchema],
];

export const fileTypes = [
  ...zarr(FileType.IMAGE_OME_ZARR, DataType.IMAGE, OmeZarrLoader, ZarrDataSource, imageOmeZarrSchema),
  ...zarr(FileType.OBS_SEGMENTATIONS_OME_ZARR, DataType.OBS_SEGMENTATIONS, OmeZarrAsObsSegmentationsLoader, ZarrDataSource, obsSegmentationsOmeZarrSchema),
  // what the joint "anndata.zarr" file type expands to (expandAnndataZarr), all read from AnnDataSource
  ...ANNDATA_FILE_TYPES.flatMap(([name, dataType, Loader, schema]) => zarr(name, dataType, Loader, AnnDataSource, schema)),
];

export const jointFileTypes = [new PluginJointFileType(FileType.ANNDATA_ZARR, expandAnndataZarr, anndataZarrSchema)];

export const coordinationTypes = baseCoordinationTypes;
