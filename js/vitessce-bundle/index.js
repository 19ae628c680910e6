// The one entry of the bundle: Vitessce and React, mounted by spora-sd's page (src/spora_sd/viewer/page.py).
// Vitessce is its core component with spora-sd's plugins only (plugins.js; build.mjs says why).
import "./gl-strings.js"; // before Vitessce: see the file
import { holdDeferredViews } from "./image-first.js";
import "./stats-pool.js"; // Viv's channel statistics in a worker (build.mjs, patches "stats*")
import React from "react";
import { createRoot } from "react-dom/client";
import { log } from "@vitessce/globals";
import { upgradeAndParse } from "@vitessce/schemas";
import { VitSContainer, logConfig } from "@vitessce/vit-s";
import { coordinationTypes, fileTypes, jointFileTypes, viewTypes } from "./plugins.js";

export { stats as decodeStats } from "./zstd-pool.js";

let root = null;

/**
 * @vitessce/all's `Vitessce` component with spora-sd's plugins: the config, upgraded to the latest
 * schema and validated, or Vitessce's warning when it cannot be.
 */
function SporaVitessce(props) {
  const { config } = props;
  const [configOrWarning, success] = React.useMemo(() => {
    try {
      logConfig(config, "pre-upgrade view config");
      return [upgradeAndParse(config), true];
    } catch (e) {
      log.error(e);
      return [{ title: "Config validation or upgrade failed.", unformatted: e.message }, false];
    }
  }, [config]);
  return React.createElement(VitSContainer, {
    ...props,
    config: configOrWarning,
    viewTypes,
    fileTypes,
    jointFileTypes,
    coordinationTypes,
    asyncFunctions: [],
    warning: success ? null : configOrWarning,
  });
}

/**
 * Show a Vitessce view config in `element`; a second call replaces the view (another tissue).
 * A fresh React root per config, so no state of the previous tissue's view survives.
 */
export function mountVitessce(element, config, height) {
  if (root !== null) {
    root.unmount();
  }
  holdDeferredViews(); // the layer controller, the heatmap and the cell sets wait for this tissue's image to be drawn
  root = createRoot(element);
  root.render(
    React.createElement(SporaVitessce, {
      config,
      height: height || 800,
      theme: "light",
    }),
  );
}
