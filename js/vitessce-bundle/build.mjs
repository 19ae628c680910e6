// Bundles Vitessce + React into ONE minified ES module, written into the Python package
// (src/spora_sd/viewer/static/vitessce-bundle.js): `spora-sd view` serves it itself, no CDN.
// Run with `npm run build` (or `make vitessce-bundle` from the repository root).
//
// The npm `vitessce` package is a prebuilt (vite) library whose lazily loaded parts are separate
// files of node_modules/vitessce/dist. Two kinds of them are swapped for the view's first tile to be
// quick (docs/benchmarks.md, "Vitessce view"; docs/design.md):
// - its zstd codec (numcodecs, run on the main thread, once per tile and channel) for
//   zstd-pool.js: decoding in Web Workers, each chunk once; the worker (zstd-worker.js) is bundled
//   first and inlined as a string;
// - the views spora-sd never shows (3D spatial with three.js, HiGlass, Neuroglancer) for
//   left-out.js: a third less JavaScript for the browser to fetch, parse and compile.
// Four places of the dist are patched (PATCHES: the text found, how often, what replaces it):
// - "stats", "stats-async": Viv's channel statistics, which Vitessce's layer controller runs on
//   every shown channel of the coarsest pyramid level (a cohort image without a pyramid has
//   1000 x 1000 pixels and more), go through all of its pixels and sort them in place, on the main
//   thread, before the image's first tile is drawn. They are replaced by channel-stats.js (from a
//   sample of at most 262,144 pixels), which the startup path (the slider range of each shown
//   channel) awaits from a Web Worker, once per channel (stats-pool.js, stats-worker.js). The
//   suggested limits and slider ranges change by a sample's error; spora-sd's configs set every
//   channel's window themselves.
// - "default ranges": every image and segmentation loader computed the statistics of its first
//   four channels (reading them whole) for its default layer, which only the old "spatial" view
//   uses, before the loader was ready; the page's views take their channels from the config. The
//   default layer's ranges are now the data type's (stats-pool.js), read from no pixel, so the
//   startup reads the shown channels only, all at once.
// - "views": Vitessce's view lookup goes through image-first.js, which mounts the heatmap and the
//   cell-set view after the image's first tile is drawn.
// - "outlines after the image": the spatial view's segmentation layers (the cell outlines) and its
//   scale bar are handed to deck.gl once the image's first tile is drawn (image-first.js): their
//   shader programs took two seconds of SwiftShader compiles before the image's first frame.
// - "random colours": the two spatial views fill a 12 MB table of random segmentation colours with
//   one Math.random() call per byte (a quarter of a second on the main thread at mount); the patch
//   fills it with crypto.getRandomValues, same size, same four leading zeros.
import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (name) => fileURLToPath(new URL(name, import.meta.url));
const outfile = here("../../src/spora_sd/viewer/static/vitessce-bundle.js");
const VITESSCE_DIST = /[\\/]node_modules[\\/]vitessce[\\/]dist[\\/]/;
// chunk name (without its content hash) -> the module served in its place
const SWAPPED = {
  zstd: here("zstd-pool.js"),
  higlass: here("left-out.js"),
  ReactNeuroglancer: here("left-out.js"),
  // the two 3D SpatialWrapper chunks (three.js, @react-three): spatialBeta draws 2D with deck.gl
  "index-CjKdDvZm": here("left-out.js"),
  "index-CO_38kOj": here("left-out.js"),
};
const COMMON = {
  bundle: true,
  format: "esm",
  minify: true,
  legalComments: "none",
  target: "es2020",
  logLevel: "warning",
};

const PATCHES = [
  {
    name: "stats",
    count: 1,
    from: `  let e = t.length, n = 1 / 0, i = -1 / 0, r = 0;
  for (; e--; )
    t[e] < n && (n = t[e]), t[e] > i && (i = t[e]), r += t[e];
  const o = r / t.length;
  e = t.length;
  let A = 0;
  for (; e--; )
    A += (t[e] - o) ** 2;
  const s = (A / t.length) ** 0.5, a = Math.floor(t.length / 2), l = Math.floor(t.length / 4), g = 3 * Math.floor(t.length / 4);
  _N(t, a);
  const I = t[a];
  _N(t, l, 0, a);
  const C = t[l];
  _N(t, g, a, t.length - 1);
  const c = t[g], u = t.filter((Q) => Q > 0), d = 5e-4, B = Math.floor(
    u.length * (1 - d)
  ), h = Math.floor(u.length * d);
  _N(u, B), _N(u, h, 0, B);
  const F = [
    u[h] || 0,
    u[B] || 0
  ];
  return {
    mean: o,
    sd: s,
    q1: C,
    q3: c,
    median: I,
    domain: [n, i],
    contrastLimits: F
  };`,
    to: "  return globalThis.__sporaChannelStatsSync(t);",
  },
  {
    name: "stats-async",
    count: 1,
    from: "r = await n.getRaster({ selection: i }), o = RM(r.data), { domain: A, contrastLimits: s } = o;",
    to: "o = await globalThis.__sporaChannelStats(n, i), { domain: A, contrastLimits: s } = o;",
  },
  {
    name: "default ranges",
    count: 1,
    from: `  const o = await l1({
    loader: t.data,
    selections: r,
    use3d: e
  }), A = zge(t)`,
    to: `  const o = globalThis.__sporaDefaultRanges ? globalThis.__sporaDefaultRanges(t.data, r) : await l1({
    loader: t.data,
    selections: r,
    use3d: e
  }), A = zge(t)`,
  },
  {
    name: "views",
    count: 1,
    from: `      if (j)
        return j.component;`,
    to: `      if (j)
        return globalThis.__sporaViewComponent ? globalThis.__sporaViewComponent(O, j.component) : j.component;`,
  },
  {
    name: "outlines after the image",
    count: 1,
    from: `    return [
      ...e,
      ...r,
      ...n,
      ...i,
      // neighborhoodsLayer,
      // obsLocationsLayer,
      this.createScaleBarLayer(),`,
    to: `    const held = globalThis.__sporaHoldLayers?.(this);
    return [
      ...e,
      ...(held ? [] : r),
      ...n,
      ...i,
      held ? null : this.createScaleBarLayer(),`,
  },
  {
    name: "random colours",
    count: 2,
    from: "new Uint8Array(2048 * 2048 * 3).map((n, i) => i < 4 ? 0 : Math.round(255 * Math.random()))",
    to: `((a) => {
        for (let k = 0; k < a.length; k += 65536) crypto.getRandomValues(a.subarray(k, k + 65536));
        return a.fill(0, 0, 4);
      })(new Uint8Array(2048 * 2048 * 3))`,
  },
];
const patched = Object.fromEntries(PATCHES.map((p) => [p.name, 0]));

const worker = await build({ ...COMMON, entryPoints: [here("zstd-worker.js")], write: false });
const statsWorker = await build({ ...COMMON, entryPoints: [here("stats-worker.js")], write: false });
const swapped = new Set();

const swapChunks = {
  name: "swap-vitessce-chunks",
  setup(b) {
    b.onResolve({ filter: /^\.\/[\w-]+\.js$/ }, (args) => {
      if (!VITESSCE_DIST.test(args.importer)) return undefined;
      const name = args.path.slice(2, -3);
      const key = Object.keys(SWAPPED).find((k) => name === k || name.startsWith(`${k}-`));
      if (key === undefined) return undefined;
      swapped.add(key);
      return { path: SWAPPED[key] };
    });
    b.onLoad({ filter: /[\\/]node_modules[\\/]vitessce[\\/]dist[\\/]index-[\w-]+\.js$/ }, async (args) => {
      let source = await readFile(args.path, "utf8");
      for (const patch of PATCHES) {
        const found = source.split(patch.from).length - 1;
        patched[patch.name] += found;
        if (found) source = source.split(patch.from).join(patch.to);
      }
      return { contents: source, loader: "js" };
    });
  },
};

await build({
  ...COMMON,
  entryPoints: [here("index.js")],
  outfile,
  // Vitessce's dependencies test process.env.NODE_ENV and `global` (webpack-era code)
  define: {
    "process.env.NODE_ENV": '"production"',
    global: "globalThis",
    __SPORA_ZSTD_WORKER__: JSON.stringify(worker.outputFiles[0].text),
    __SPORA_STATS_WORKER__: JSON.stringify(statsWorker.outputFiles[0].text),
  },
  // Vitessce's optional WebXR (VR headset) views import @react-three/xr lazily; the view never
  // uses them, so that import is left out rather than adding the XR stack to the bundle.
  external: ["@react-three/xr"],
  plugins: [swapChunks],
});
// a new vitessce release renames its chunks: fail rather than silently bundle the slow codec
const missing = Object.keys(SWAPPED).filter((k) => !swapped.has(k));
for (const patch of PATCHES) {
  if (patched[patch.name] !== patch.count) {
    throw new Error(`patch "${patch.name}" applied ${patched[patch.name]} times, not ${patch.count}: update PATCHES in build.mjs`);
  }
}
if (missing.length) {
  throw new Error(`node_modules/vitessce/dist has no chunk ${missing.join(", ")}: update SWAPPED in build.mjs`);
}
console.log(`wrote ${outfile}`);
