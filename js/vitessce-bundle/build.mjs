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
// One function is patched (STATS_*): Viv's channel statistics, which Vitessce's layer controller
// runs on every shown channel of the coarsest pyramid level, sort all of its pixels (quickselect) for
// percentiles; a cohort image without a pyramid has 1000 x 1000 of them and more. The patched
// function keeps the exact minimum, maximum and mean, and takes the percentiles of every k-th pixel
// (at most 262,144 of them): the slider ranges stay exact, the suggested limits change by a sample's
// error. spora-sd's configs set every channel's window themselves.
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

const STATS_FROM = `    t[e] < n && (n = t[e]), t[e] > i && (i = t[e]), r += t[e];
  const o = r / t.length;
`;
const STATS_TO = `    t[e] < n && (n = t[e]), t[e] > i && (i = t[e]), r += t[e];
  const o = r / t.length;
  if (t.length > 262144) {
    const k = Math.ceil(t.length / 262144);
    t = t.filter((_, j) => j % k === 0);
  }
`;
let statsPatched = 0;

const worker = await build({ ...COMMON, entryPoints: [here("zstd-worker.js")], write: false });
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
      const source = await readFile(args.path, "utf8");
      const found = source.split(STATS_FROM).length - 1;
      if (found === 0) return undefined;
      if (found !== 1) throw new Error(`${args.path}: Viv's channel statistics found ${found} times`);
      statsPatched += 1;
      return { contents: source.replace(STATS_FROM, STATS_TO), loader: "js" };
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
  },
  // Vitessce's optional WebXR (VR headset) views import @react-three/xr lazily; the view never
  // uses them, so that import is left out rather than adding the XR stack to the bundle.
  external: ["@react-three/xr"],
  plugins: [swapChunks],
});
// a new vitessce release renames its chunks: fail rather than silently bundle the slow codec
const missing = Object.keys(SWAPPED).filter((k) => !swapped.has(k));
if (statsPatched !== 1) {
  throw new Error(`Viv's channel statistics patched ${statsPatched} times, not once: update STATS_FROM in build.mjs`);
}
if (missing.length) {
  throw new Error(`node_modules/vitessce/dist has no chunk ${missing.join(", ")}: update SWAPPED in build.mjs`);
}
console.log(`wrote ${outfile}`);
