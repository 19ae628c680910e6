// Bundles Vitessce + React into ONE minified ES module, written into the Python package
// (src/spora_sd/viewer/static/vitessce-bundle.js): `spora-sd view` serves it itself, no CDN.
// Run with `npm run build` (or `make vitessce-bundle` from the repository root).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const outfile = fileURLToPath(new URL("../../src/spora_sd/viewer/static/vitessce-bundle.js", import.meta.url));

await build({
  entryPoints: [fileURLToPath(new URL("index.js", import.meta.url))],
  outfile,
  bundle: true,
  format: "esm",
  minify: true,
  legalComments: "none",
  target: "es2020",
  // Vitessce's dependencies test process.env.NODE_ENV and `global` (webpack-era code)
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
  // Vitessce's optional WebXR (VR headset) views import @react-three/xr lazily; the view never
  // uses them, so that import is left out rather than adding the XR stack to the bundle.
  external: ["@react-three/xr"],
  logLevel: "warning",
});
console.log(`wrote ${outfile}`);
