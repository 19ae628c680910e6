// Bundles Vitessce + React into ONE minified ES module, written into the Python package
// (src/spora_sd/viewer/static/vitessce-bundle.js): `spora-sd view` serves it itself, no CDN.
// Run with `npm run build` (or `make vitessce-bundle` from the repository root). For CPU profiles of the
// page: SPORA_BUNDLE_READABLE=1 (names kept) SPORA_BUNDLE_OUTFILE=/elsewhere.js npm run build.
//
// The bundle holds Vitessce's core (VitSContainer of @vitessce/vit-s, mounted by index.js) with
// ONLY the views, file types and joint file types of spora-sd's configs (plugins.js: spatialBeta,
// layerControllerBeta, heatmap, obsSets; OME-Zarr image and labels, AnnData-Zarr). The npm
// `vitessce` package (and @vitessce/all) registers every view and loader in one prebuilt 11.7 MB
// chunk that esbuild cannot tree-shake; each scoped package's own dist is a prebuilt chunk too,
// with its own copy of deck.gl, Viv and MUI. So the scoped packages are bundled from their
// dist-tsc (tsc's output: one ES module per source file, plain imports), and esbuild resolves
// every dependency once and leaves out what the page never uses (docs/benchmarks.md, "Vitessce
// view"). mainFields is set explicitly: with esbuild's default, one require() of a package makes
// every import of it take the package's CommonJS build (deck.gl, luma.gl, loaders.gl), which
// cannot be tree-shaken.
//
// Modules swapped for the view's first tile to be quick (docs/benchmarks.md; docs/design.md):
// - zarrita's zstd codec (numcodecs, run on the main thread, once per tile and channel) for
//   zstd-pool.js: decoding in Web Workers, each chunk once; the worker (zstd-worker.js) is bundled
//   first and inlined as a string;
// - the 3D spatial views (three.js), which spatialBeta imports lazily, for left-out.js;
// - mathjs, which @vitessce/spatial-utils imports for three functions on the images' physical pixel
//   sizes (unit, divide, compare) and which builds all of its functions when the bundle is evaluated
//   (about 100 ms before the first tile), for length-units.js: lengths only, checked against mathjs
//   below for every length unit and prefix mathjs knows.
// Imports narrowed to the part the importer uses (NARROWED), where a package's index pulls in much
// more: zarr.js without the codecs it registers (Vitessce reads Zarr with zarrita), one layer of
// @nebula.gl/layers and a constant of nebula.gl (CommonJS indexes that require H3, deck.gl's geo
// layers and JSTS), and three of nebula.gl's edit modes (edit-modes.js; Vitessce's lasso uses two).
// The coordination types are @vitessce/all's (all of them, base-plugins.js): build.mjs takes that
// one array out of the file (COORDINATION), without the imports of every other view and loader.
// Places of the scoped packages' sources are patched (PATCHES: the file, the text found, how
// often, what replaces it; the build fails when a text is not found as often as expected):
// - "stats", "stats-async" (@vivjs/loaders, @vitessce/spatial-utils): Viv's channel statistics,
//   which Vitessce's layer controller runs on every shown channel of the coarsest pyramid level (a
//   cohort image without a pyramid has 1000 x 1000 pixels and more), go through all of its pixels
//   and sort them in place, on the main thread, before the image's first tile is drawn. They are
//   replaced by channel-stats.js (from a sample of at most 262,144 pixels), which the startup path
//   (the slider range of each shown channel) awaits from a Web Worker, once per channel
//   (stats-pool.js, stats-worker.js). The suggested limits and slider ranges change by a sample's
//   error; spora-sd's configs set every channel's window themselves.
// - "default ranges" (@vitessce/spatial-utils): every image and segmentation loader computed the
//   statistics of its first four channels (reading them whole) for its default layer, which only
//   the old "spatial" view uses, before the loader was ready; the page's views take their channels
//   from the config. The default layer's ranges are now the data type's (stats-pool.js), read from
//   no pixel, so the startup reads the shown channels only, all at once.
// - "views" (@vitessce/vit-s): Vitessce's view lookup goes through image-first.js, which mounts the
//   layer controller, the heatmap and the cell-set view once the image is drawn.
// - "image viewport loaded" (@vitessce/spatial-beta): the image layer's onViewportLoad (a no-op in
//   Vitessce) tells image-first.js that the tiles in view are loaded, the first step of its gate.
// - "v3 first" (@vitessce/spatial-utils): an OME-Zarr image is opened as Zarr v3 first (zarrita tries
//   v2 first on a new store: .zattrs, .zarray and .zgroup, three 404s one after another before the
//   image's zarr.json); spora-sd serves every image as v3 (the labels, v2, pay one 404 instead).
// - "outlines after the image" (@vitessce/spatial-beta): the spatial view's segmentation layers
//   (the cell outlines) and its scale bar are handed to deck.gl once the image's first tile is
//   drawn (image-first.js): their shader programs took two seconds of SwiftShader compiles before
//   the image's first frame.
// - "random colours" (@vitessce/spatial-beta): the spatial view fills a 12 MB table of random
//   segmentation colours with one Math.random() call per byte (a quarter of a second on the main
//   thread at mount); the patch fills it with crypto.getRandomValues, same size, same four leading
//   zeros. (The npm `vitessce` build held two spatial views, so this patch was applied twice there.)
// - "rc-tree: ..." (rc-tree 2.1.0, the cell-set tree): it passes its state to its nodes with React's
//   legacy context, which React 19 no longer has; Vitessce's own build patches it
//   (patches/rc-tree@2.1.0.patch of its repository), the npm package is unpatched, so the same change
//   is made here: the tree provides a React context, each node reads it as its contextType.
import { build } from "esbuild";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = (name) => fileURLToPath(new URL(name, import.meta.url));
const outfile = process.env.SPORA_BUNDLE_OUTFILE || here("../../src/spora_sd/viewer/static/vitessce-bundle.js");
const COMMON = {
  bundle: true,
  format: "esm",
  minifyWhitespace: true,
  minifySyntax: true,
  minifyIdentifiers: !process.env.SPORA_BUNDLE_READABLE,
  legalComments: "none",
  target: "es2020",
  logLevel: "warning",
  mainFields: ["browser", "module", "main"],
};
// bare import -> the module served in its place (importer: the package that imports it)
const SWAPPED = {
  "numcodecs/zstd": { importer: "zarrita", path: here("zstd-pool.js") },
  "@vitessce/spatial-three": { importer: "@vitessce/spatial-beta", path: here("left-out.js") },
  "@vitessce/spatial-accelerated": { importer: "@vitessce/spatial-beta", path: here("left-out.js") },
  mathjs: { importer: "@vitessce/spatial-utils", path: here("length-units.js") },
};
// bare import -> the smaller module served in its place: the importer uses a part of a package whose
// index pulls in much more (importer: the package that imports it; exports: what it uses)
const NARROWED = {
  // Viv's loaders import zarr.js for its error classes and stores; its index also registers zarr.js'
  // own codecs (a 420 kB blosc build), which the view never runs: Vitessce reads Zarr with zarrita
  zarr: { importer: "@vivjs/loaders", contents: 'export * from "zarr/core";' },
  // @vitessce/gl's selection layer: one layer of @nebula.gl/layers (CommonJS: its index requires
  // every layer, with H3 and deck.gl's geo layers) and a constant of nebula.gl (whose index draws
  // in turf's buffer, i.e. JSTS)
  "@nebula.gl/layers": {
    importer: "@vitessce/gl",
    contents: 'export { default as EditableGeoJsonLayer } from "@nebula.gl/layers/dist-es6/layers/editable-geojson-layer.js";',
  },
  // nebula.gl's edit modes: Vitessce's selection layer uses two (drawing a polygon by dragging,
  // viewing) and the editable layer's default (drawing a polygon); the layer's index of modes by
  // name (legacy string modes, which Vitessce never passes) makes one of every other mode when the
  // bundle is evaluated, with turf's transforms and buffer (JSTS). Those are edit-modes.js' stand-ins.
  "@nebula.gl/edit-modes": {
    importer: ["@nebula.gl/layers", "@vitessce/gl"],
    contents: 'export * from "./edit-modes.js";',
    resolveDir: here("."),
  },
  "nebula.gl": {
    importer: "@vitessce/gl",
    // nebula.gl/dist-es6/lib/deck-renderer/deck-drawer.js
    contents: 'export const SELECTION_TYPE = { NONE: null, RECTANGLE: "rectangle", POLYGON: "polygon" };',
  },
};
// @vitessce/all's coordination types: the array, from its first line to the next export, and the
// imports it needs (its other imports are every view and loader of Vitessce)
const COORDINATION = {
  file: "@vitessce/all/dist-tsc/base-plugins.js",
  start: "export const baseCoordinationTypes = [",
  end: "export const baseAsyncFunctions",
  imports: /^import \{[^}]*\} from '@vitessce\/(constants-internal|plugins|schemas)';$/gm,
};

const PATCHES = [
  {
    name: "stats",
    file: "@vivjs/loaders/dist/index.mjs",
    count: 1,
    from: `function getChannelStats(arr) {
  let len = arr.length;`,
    to: `function getChannelStats(arr) {
  return globalThis.__sporaChannelStatsSync(arr);
  let len = arr.length;`,
  },
  {
    name: "stats-async",
    file: "@vitessce/spatial-utils/dist-tsc/layer-controller.js",
    count: 1,
    from: `    const raster = await data.getRaster({ selection: filteredSelection });
    const selectionStats = viv.getChannelStats(raster.data);`,
    to: "    const selectionStats = await globalThis.__sporaChannelStats(data, filteredSelection);",
  },
  {
    name: "default ranges",
    file: "@vitessce/spatial-utils/dist-tsc/spatial.js",
    count: 1,
    from: `    const stats = await getMultiSelectionStats({
        loader: loader.data, selections: defaultSelection, use3d,
    });`,
    to: `    const stats = globalThis.__sporaDefaultRanges ? globalThis.__sporaDefaultRanges(loader.data, defaultSelection) : await getMultiSelectionStats({
        loader: loader.data, selections: defaultSelection, use3d,
    });`,
  },
  {
    name: "v3 first",
    file: "@vitessce/spatial-utils/dist-tsc/load-ome-zarr.js",
    count: 1,
    from: "rootAttrs = (await zarrOpen(root)).attrs;",
    to: "rootAttrs = (await zarrOpen.v3(root).catch(() => zarrOpen(root))).attrs;",
  },
  {
    name: "views",
    file: "@vitessce/vit-s/dist-tsc/vitessce-grid-layout/VitessceGridLayout.js",
    count: 1,
    from: `            if (matchingViewType) {
                return matchingViewType.component;`,
    to: `            if (matchingViewType) {
                return globalThis.__sporaViewComponent ? globalThis.__sporaViewComponent(viewType, matchingViewType.component) : matchingViewType.component;`,
  },
  {
    name: "outlines after the image",
    file: "@vitessce/spatial-beta/dist-tsc/Spatial.js",
    count: 1,
    from: `        return [
            ...imageLayers,
            ...obsSegmentationsLayers,
            ...obsSpotsLayers,
            ...obsPointsLayers,
            // neighborhoodsLayer,
            // obsLocationsLayer,
            this.createScaleBarLayer(),`,
    to: `        const held = globalThis.__sporaHoldLayers?.(this);
        return [
            ...imageLayers,
            ...(held ? [] : obsSegmentationsLayers),
            ...obsSpotsLayers,
            ...obsPointsLayers,
            held ? null : this.createScaleBarLayer(),`,
  },
  {
    name: "image viewport loaded",
    file: "@vitessce/spatial-beta/dist-tsc/Spatial.js",
    count: 1,
    from: `            onViewportLoad: () => { }, // layerProps.callback, // TODO: figure out callback implementation
            excludeBackground: useTransparentColor,`,
    to: `            onViewportLoad: globalThis.__sporaImageViewportLoaded ?? (() => { }),
            excludeBackground: useTransparentColor,`,
  },
  {
    name: "random colours",
    file: "@vitessce/spatial-beta/dist-tsc/Spatial.js",
    count: 1,
    from: `new Uint8Array(2048 * 2048 * 3)
                .map((_, j) => (j < 4 ? 0 : Math.round(255 * Math.random())))`,
    to: `((a) => {
                for (let k = 0; k < a.length; k += 65536) crypto.getRandomValues(a.subarray(k, k + 65536));
                return a.fill(0, 0, 4);
            })(new Uint8Array(2048 * 2048 * 3))`,
  },
  // rc-tree 2.1.0 (the cell-set tree) passes its state to its nodes with React's legacy context,
  // which React 19 no longer has; Vitessce's own build patches it (its patches/rc-tree@2.1.0.patch)
  // to use a React context, and so does this one: the tree provides what its getChildContext
  // returns, and each node reads it as its contextType.
  {
    name: "rc-tree: context",
    file: "rc-tree/es/contextTypes.js",
    count: 1,
    from: "import PropTypes from 'prop-types';",
    to: "import PropTypes from 'prop-types';\nimport React from 'react';\nexport var TreeContext = React.createContext();",
  },
  {
    name: "rc-tree: tree imports the context",
    file: "rc-tree/es/Tree.js",
    count: 1,
    from: "import { treeContextTypes } from './contextTypes';",
    to: "import { TreeContext } from './contextTypes';",
  },
  {
    name: "rc-tree: tree provides the context",
    file: "rc-tree/es/Tree.js",
    count: 1,
    from: `      return React.createElement(
        'ul',`,
    to: `      return React.createElement(TreeContext.Provider, { value: this.getChildContext().rcTree }, React.createElement(
        'ul',`,
  },
  {
    name: "rc-tree: tree provides the context (end)",
    file: "rc-tree/es/Tree.js",
    count: 1,
    from: `          return _this2.renderTreeNode(node, index);
        })
      );`,
    to: `          return _this2.renderTreeNode(node, index);
        })
      ));`,
  },
  {
    name: "rc-tree: tree has no legacy context",
    file: "rc-tree/es/Tree.js",
    count: 1,
    from: "Tree.childContextTypes = treeContextTypes;",
    to: "",
  },
  {
    name: "rc-tree: node imports the context",
    file: "rc-tree/es/TreeNode.js",
    count: 1,
    from: "import { nodeContextTypes } from './contextTypes';",
    to: "import { TreeContext } from './contextTypes';",
  },
  {
    name: "rc-tree: node reads the context",
    file: "rc-tree/es/TreeNode.js",
    count: 1,
    from: `TreeNode.contextTypes = nodeContextTypes;
TreeNode.childContextTypes = nodeContextTypes;`,
    to: "TreeNode.contextType = TreeContext;",
  },
  {
    name: "rc-tree: node's context is the tree's",
    file: "rc-tree/es/TreeNode.js",
    count: 27,
    from: "context.rcTree",
    to: "context",
  },
];
const patched = Object.fromEntries(PATCHES.map((p) => [p.name, 0]));
const swapped = new Set();
let coordinationFound = false;

const nodeModule = (name) => new RegExp(`[\\\\/]node_modules[\\\\/]${name.replace(/[.]/g, "\\.").replace(/\//g, "[\\\\/]")}$`);
const inPackage = (importer, name) => new RegExp(`[\\\\/]node_modules[\\\\/]${name.replace(/\//g, "[\\\\/]")}[\\\\/]`).test(importer);

const worker = await build({ ...COMMON, entryPoints: [here("zstd-worker.js")], write: false });
const statsWorker = await build({ ...COMMON, entryPoints: [here("stats-worker.js")], write: false });

const vitessceSources = {
  name: "vitessce-sources",
  setup(b) {
    // the swapped modules
    b.onResolve({ filter: /^(numcodecs\/zstd|@vitessce\/spatial-(three|accelerated)|mathjs)$/ }, (args) => {
      const swap = SWAPPED[args.path];
      if (!inPackage(args.importer, swap.importer)) return undefined;
      swapped.add(args.path);
      return { path: swap.path };
    });
    b.onResolve({ filter: /^(zarr|@nebula\.gl\/(layers|edit-modes)|nebula\.gl)$/ }, (args) => {
      const narrow = NARROWED[args.path];
      if (![narrow.importer].flat().some((name) => inPackage(args.importer, name))) return undefined;
      swapped.add(args.path);
      return { path: args.path, namespace: "narrowed", pluginData: narrow.resolveDir || dirname(args.importer) };
    });
    b.onLoad({ filter: /.*/, namespace: "narrowed" }, (args) => ({
      contents: NARROWED[args.path].contents,
      loader: "js",
      resolveDir: args.pluginData,
    }));
    // a scoped package: its dist-tsc (one module per source file) in place of its prebuilt dist
    b.onResolve({ filter: /^@vitessce\/[\w-]+(\/dist-tsc\/[\w/-]+\.js)?$/ }, async (args) => {
      if (args.pluginData === "vitessce-sources") return undefined;
      const [scope, name, ...rest] = args.path.split("/");
      const found = await b.resolve(`${scope}/${name}`, {
        importer: args.importer,
        resolveDir: args.resolveDir,
        kind: args.kind,
        pluginData: "vitessce-sources",
      });
      if (found.errors.length) return { errors: found.errors };
      const root = found.path.replace(/[\\/]dist[\\/][^\\/]+$/, "");
      const path = `${root}/${rest.length ? rest.join("/") : "dist-tsc/index.js"}`;
      return { path: existsSync(path) ? path : found.path };
    });
    b.onLoad({ filter: nodeModule(COORDINATION.file) }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const start = source.indexOf(COORDINATION.start);
      const end = source.indexOf(COORDINATION.end, start);
      const imports = source.match(COORDINATION.imports) ?? [];
      if (start < 0 || end < 0 || imports.length !== 3) {
        throw new Error(`${args.path}: no baseCoordinationTypes array or not its 3 imports: update COORDINATION in build.mjs`);
      }
      coordinationFound = true;
      return { contents: `${imports.join("\n")}\n${source.slice(start, end)}`, loader: "js", resolveDir: dirname(args.path) };
    });
    for (const file of new Set(PATCHES.map((p) => p.file))) {
      b.onLoad({ filter: nodeModule(file) }, async (args) => {
        let source = await readFile(args.path, "utf8");
        for (const patch of PATCHES.filter((p) => p.file === file)) {
          const found = source.split(patch.from).length - 1;
          patched[patch.name] += found;
          if (found) source = source.split(patch.from).join(patch.to);
        }
        return { contents: source, loader: "js" };
      });
    }
  },
};

// length-units.js against mathjs (which it replaces in the bundle): every length unit mathjs knows,
// with each of its prefixes, gives the same ratio to a micrometre and compares the same; other units
// and unknown names are errors in both (mathjs: an error, or a quotient that is no number)
async function checkLengthUnits() {
  const math = await import("mathjs");
  const ours = await import(here("length-units.js"));
  const { Unit } = math;
  const lengths = Object.entries(Unit.UNITS).filter(([, u]) => u.base === Unit.BASE_UNITS.LENGTH);
  const names = new Set(lengths.map(([name]) => name));
  const missing = [...names].filter((name) => !(name in ours.LENGTH_UNITS));
  const extra = Object.keys(ours.LENGTH_UNITS).filter((name) => !names.has(name));
  if (missing.length || extra.length) throw new Error(`length-units.js: not mathjs' length units (missing ${missing}, extra ${extra})`);
  const micrometre = [math.unit("1 um"), ours.unit("1 um")];
  let checked = 0;
  for (const [name, u] of lengths) {
    for (const prefix of Object.keys(u.prefixes)) {
      for (const value of ["1", "0.5", "2.5e-1", "3"]) {
        const text = `${value} ${prefix}${name}`;
        const theirs = math.unit(text);
        const mine = ours.unit(text);
        const [a, b] = [math.divide(theirs, micrometre[0]), ours.divide(mine, micrometre[1])];
        if (typeof a !== "number" || Math.abs(a - b) > 1e-12 * Math.abs(a) || math.compare(theirs, micrometre[0]) !== ours.compare(mine, micrometre[1])) {
          throw new Error(`length-units.js: ${text} gives ${b}, mathjs ${a}`);
        }
        checked += 1;
      }
    }
  }
  if (ours.divide(ours.unit("1 um"), ours.unit("1 um")) !== 1 || ours.divide(ours.unit("0.5 um"), ours.unit("500 nm")) !== math.divide(math.unit("0.5 um"), math.unit("500 nm"))) {
    throw new Error("length-units.js: equal lengths do not divide to mathjs' ratio");
  }
  // (a bare "um", a unit without a number, is 1 um in mathjs and an error here: Vitessce always gives a number)
  const ratio = (lib, text, unit) => {
    try {
      return lib.divide(lib.unit(text), unit);
    } catch {
      return null;
    }
  };
  for (const text of ["1 s", "1 foo", "undefined um", "NaN um", "1 µm", "1 metre"]) {
    if (ratio(ours, text, micrometre[1]) !== null || typeof ratio(math, text, micrometre[0]) === "number") {
      throw new Error(`length-units.js: "${text}" should be an error`);
    }
  }
  return checked;
}

const result = await build({
  ...COMMON,
  entryPoints: [here("index.js")],
  outfile,
  write: false, // written below, once every patch and swap is known to have been made
  // Vitessce's dependencies test process.env.NODE_ENV and `global` (webpack-era code)
  define: {
    "process.env.NODE_ENV": '"production"',
    global: "globalThis",
    __SPORA_ZSTD_WORKER__: JSON.stringify(worker.outputFiles[0].text),
    __SPORA_STATS_WORKER__: JSON.stringify(statsWorker.outputFiles[0].text),
  },
  // tss-react (Vitessce's styles) imports @mui/material, which npm installs under @vitessce/styles
  nodePaths: [here("node_modules/@vitessce/styles/node_modules")],
  // unzipit (zarrita's zip stores, never used by the view) imports node's worker_threads when it
  // runs in node; in the browser that import is never made
  external: ["worker_threads"],
  plugins: [vitessceSources],
  // what the bundle consists of: SPORA_BUNDLE_METAFILE=meta.json npm run build (esbuild's analyzer reads it)
  metafile: Boolean(process.env.SPORA_BUNDLE_METAFILE),
});
if (process.env.SPORA_BUNDLE_METAFILE) await writeFile(process.env.SPORA_BUNDLE_METAFILE, JSON.stringify(result.metafile));
// a new Vitessce release moves or rewrites the patched code: fail rather than silently bundle the slow path
for (const patch of PATCHES) {
  if (patched[patch.name] !== patch.count) {
    throw new Error(`patch "${patch.name}" applied ${patched[patch.name]} times, not ${patch.count}: update PATCHES in build.mjs`);
  }
}
const missing = [...Object.keys(SWAPPED), ...Object.keys(NARROWED)].filter((k) => !swapped.has(k));
if (missing.length) {
  throw new Error(`no import of ${missing.join(", ")} was swapped: update SWAPPED in build.mjs`);
}
if (!coordinationFound) {
  throw new Error(`${COORDINATION.file} was not bundled: update COORDINATION in build.mjs`);
}
await checkLengthUnits();
await mkdir(dirname(outfile), { recursive: true });
await writeFile(outfile, result.outputFiles[0].contents);
console.log(`wrote ${outfile} (${result.outputFiles[0].contents.length} bytes)`);
