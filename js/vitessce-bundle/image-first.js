// Draws the image first: the views that do not show the image (the heatmap and the cell-set view),
// and the spatial view's cell outlines and scale bar, are mounted once the spatial view has uploaded
// its first image tile and drawn it, not at the same time as the image. Each of them otherwise sets
// up its own WebGL programs (the views: their own deck.gl canvas) and data on the page's one main
// thread while the image loads, and with a software WebGL renderer that doubles the time to the
// first tile (docs/benchmarks.md, "Vitessce view").
//
// build.mjs routes Vitessce's view lookup (VitessceGridLayout's getComponent) through
// globalThis.__sporaViewComponent, defined here: a deferred view renders a short note until the gate
// opens. The gate opens once the image layer's first tiles are up: after the first texture upload
// with format RED_INTEGER (Viv's tiles of integer pixels; the outlines' labels would be too, but
// they are held) or the first compile of Viv's image shader (xr-layer, for float pixels), whichever
// comes first, as soon as QUIET_FRAMES animation frames went by without another such upload; or
// FALLBACK_MS after the mount at the latest (an image that fails to load). Each mount
// (mountVitessce: a tissue) closes the gate again.
import React from "react";

export const DEFERRED_VIEWS = new Set(["heatmap", "obsSets"]);
const FALLBACK_MS = 15000;
const RED_INTEGER = 0x8d94;
const QUIET_FRAMES = 2;

let gate = null;

function newGate() {
  const listeners = new Set();
  const g = { open: false, listeners, timer: null };
  g.release = () => {
    if (g.open) return;
    g.open = true;
    clearTimeout(g.timer);
    performance.mark("spora:views-released");
    for (const listener of listeners) listener();
    listeners.clear();
  };
  g.timer = setTimeout(g.release, FALLBACK_MS);
  return g;
}

/** Close the gate for a new mount: the deferred views of that mount wait for its first image tile. */
export function holdDeferredViews() {
  if (gate !== null) gate.release();
  gate = newGate();
}

function imageTileUploaded() {
  const g = gate;
  if (g === null || g.open) return;
  g.uploads = (g.uploads ?? 0) + 1;
  if (g.releasing) return;
  g.releasing = true;
  // the uploads happen inside deck.gl's frames that draw the tiles; the gate opens after QUIET_FRAMES
  // frames without one, so that the tiles of the first view (which arrive over a few frames) are
  // drawn before the views and layers it holds compile their programs
  let seen = -1;
  let quiet = 0;
  const tick = () => {
    quiet = g.uploads === seen ? quiet + 1 : 0;
    seen = g.uploads;
    if (quiet >= QUIET_FRAMES) g.release();
    else if (!g.open) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function watchUploads(proto) {
  if (proto === undefined) return;
  const shaderSource = proto.shaderSource;
  proto.shaderSource = function (shader, source) {
    if (source.includes("#define SHADER_NAME xr-layer-")) imageTileUploaded();
    return shaderSource.call(this, shader, source);
  };
  for (const name of ["texImage2D", "texSubImage2D"]) {
    const upload = proto[name];
    proto[name] = function (...args) {
      // texImage2D(target, level, internalformat, width, height, border, format, type, pixels[, offset])
      // and texSubImage2D(target, level, x, y, width, height, format, type, pixels[, offset]): format 7th
      if (args.length >= 9 && args[6] === RED_INTEGER) imageTileUploaded();
      return upload.apply(this, args);
    };
  }
}

// The spatial view's segmentation layers (the cell outlines) and scale bar wait for the gate too
// (build.mjs, patch "outlines after the image"): while it is closed, the view hands deck.gl its image
// layers only, so their shader programs (two seconds of SwiftShader compiles for the outlines) come
// after the image's first frame; the gate re-renders the view when it opens. The outlines' data
// still loads meanwhile.
function holdLayers(view) {
  const g = gate;
  if (g === null || g.open) return false;
  g.held ??= new WeakSet();
  if (!g.held.has(view)) {
    g.held.add(view);
    g.listeners.add(() => view.forceUpdate());
  }
  return true;
}

const wrappers = new WeakMap(); // view component -> its deferred wrapper (one each: React keeps it mounted)

function deferred(name, Component) {
  if (!DEFERRED_VIEWS.has(name) || Component == null) return Component;
  let Wrapper = wrappers.get(Component);
  if (Wrapper === undefined) {
    Wrapper = function SporaDeferredView(props) {
      const [mine] = React.useState(() => gate);
      const [ready, setReady] = React.useState(() => mine === null || mine.open);
      React.useEffect(() => {
        if (ready) return undefined;
        const show = () => setReady(true);
        mine.listeners.add(show);
        return () => mine.listeners.delete(show);
      }, [mine, ready]);
      if (ready) return React.createElement(Component, props);
      return React.createElement(
        "div",
        { className: "spora-deferred-view", style: { padding: "8px 12px", color: "#666", fontSize: "13px" } },
        "shown once the image is drawn",
      );
    };
    wrappers.set(Component, Wrapper);
  }
  return Wrapper;
}

if (typeof window !== "undefined") {
  watchUploads(window.WebGL2RenderingContext?.prototype);
  globalThis.__sporaViewComponent = deferred;
  globalThis.__sporaHoldLayers = holdLayers;
}
