// The one entry of the bundle: Vitessce and React, mounted by spora-sd's page (src/spora_sd/viewer/page.py).
import "./gl-strings.js"; // before Vitessce: see the file
import { holdDeferredViews } from "./image-first.js";
import "./stats-pool.js"; // Viv's channel statistics in a worker (build.mjs, patches "stats*")
import React from "react";
import { createRoot } from "react-dom/client";
import { Vitessce } from "vitessce";

export { stats as decodeStats } from "./zstd-pool.js";

let root = null;

/**
 * Show a Vitessce view config in `element`; a second call replaces the view (another tissue).
 * A fresh React root per config, so no state of the previous tissue's view survives.
 */
export function mountVitessce(element, config, height) {
  if (root !== null) {
    root.unmount();
  }
  holdDeferredViews(); // the heatmap and the cell sets wait for this tissue's first image tile
  root = createRoot(element);
  root.render(
    React.createElement(Vitessce, {
      config,
      height: height || 800,
      theme: "light",
    }),
  );
}
