// Draws the image first: the views that do not show the image (the layer controller, the heatmap
// and the cell-set view), and the spatial view's cell outlines and scale bar, are mounted once the
// spatial view has drawn the image's tiles in view, not at the same time as the image. Each of them
// otherwise renders its React tree and sets up its WebGL programs (the heatmap: its own deck.gl
// canvas) and data on the page's one main thread while the image loads, and with a software WebGL
// renderer that doubles the time to the first tile (docs/benchmarks.md, "Vitessce view"). The layer
// controller also computes each shown channel's statistics for its sliders (stats-pool.js): held
// back, they no longer stand between the image's chunks and its textures.
//
// build.mjs routes Vitessce's view lookup (VitessceGridLayout's getComponent) through
// globalThis.__sporaViewComponent, defined here: a deferred view renders a short note until the gate
// opens. The gate opens once the image is drawn: Viv's tile layer reports the tiles in view loaded
// (its onViewportLoad, which build.mjs's patch "image viewport loaded" routes to
// globalThis.__sporaImageViewportLoaded; an image of one level is drawn whole, by Viv's background
// layer, and its tile layer reports at once), then DRAWN_FRAMES frames draw with Viv's image program
// after the last texture upload, and the GPU process has carried them out (a fence); or FALLBACK_MS
// after the mount at the latest (an image that fails to load). Opening at the first texture upload
// instead (as before) let the held views' mount, a few hundred ms of React work and more with the
// layer controller held too, run before the frame that shows the image. Each mount (mountVitessce:
// a tissue) closes the gate again.
import React from "react";

export const DEFERRED_VIEWS = new Set(["heatmap", "obsSets", "layerControllerBeta"]);
const FALLBACK_MS = 15000;
const DRAWN_FRAMES = 2;

let gate = null;

function newGate() {
  const listeners = new Set();
  const g = { open: false, listeners, timer: null, uploads: 0, imageDraws: 0, context: null };
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

/** Close the gate for a new mount: the deferred views of that mount wait for its image's tiles. */
export function holdDeferredViews() {
  if (gate !== null) gate.release();
  gate = newGate();
}

function imageViewportLoaded() {
  const g = gate;
  if (g === null || g.open || g.releasing) return;
  g.releasing = true;
  performance.mark("spora:image-viewport-loaded");
  // the image's layers upload their textures in the frames that draw them; the gate opens once
  // DRAWN_FRAMES frames have drawn with the image's program (Viv's xr-layer) since the last upload
  // (the first of them does not show the image yet: measured, docs/benchmarks.md), and a fence placed
  // behind them has passed: the GPU process (a software renderer compiles a program at its first
  // draw) has carried them out
  let uploads = -1;
  let drawn = 0;
  const tick = () => {
    if (g.open) return;
    if (g.uploads !== uploads) {
      uploads = g.uploads;
      drawn = 0;
    } else if (g.imageDraws > 0) {
      drawn += 1;
    }
    g.imageDraws = 0;
    if (drawn >= DRAWN_FRAMES) afterGpu(g.context, g.release);
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

/** Call `done` once `gl` has carried out every command issued so far (at once without a context). */
function afterGpu(gl, done) {
  const sync = gl?.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0);
  if (!sync) {
    done();
    return;
  }
  gl.flush();
  const poll = () => {
    if (gl.isContextLost() || gl.getSyncParameter(sync, gl.SYNC_STATUS) === gl.SIGNALED) {
      gl.deleteSync(sync);
      done();
    } else {
      requestAnimationFrame(poll);
    }
  };
  requestAnimationFrame(poll);
}

// While the gate is closed: texture uploads (counted, and the context they go to: the spatial view's,
// the other views with a canvas are held) and draws with Viv's image program (shader "xr-layer-*")
function watchImage(proto) {
  if (proto === undefined) return;
  const closed = () => gate !== null && !gate.open;
  for (const name of ["texImage2D", "texSubImage2D"]) {
    const upload = proto[name];
    proto[name] = function (...args) {
      if (closed()) {
        gate.uploads += 1;
        gate.context = this;
      }
      return upload.apply(this, args);
    };
  }
  const imageShaders = new WeakSet();
  const imagePrograms = new WeakSet();
  let imageProgramInUse = false;
  const { shaderSource, attachShader, useProgram } = proto;
  proto.shaderSource = function (shader, source) {
    if (source.includes("#define SHADER_NAME xr-layer-")) imageShaders.add(shader);
    return shaderSource.call(this, shader, source);
  };
  proto.attachShader = function (program, shader) {
    if (imageShaders.has(shader)) imagePrograms.add(program);
    return attachShader.call(this, program, shader);
  };
  proto.useProgram = function (program) {
    imageProgramInUse = program !== null && imagePrograms.has(program);
    return useProgram.call(this, program);
  };
  for (const name of ["drawArrays", "drawElements", "drawArraysInstanced", "drawElementsInstanced"]) {
    const draw = proto[name];
    proto[name] = function (...args) {
      if (imageProgramInUse && closed()) gate.imageDraws += 1;
      return draw.apply(this, args);
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
  watchImage(window.WebGL2RenderingContext?.prototype);
  globalThis.__sporaImageViewportLoaded = imageViewportLoaded;
  globalThis.__sporaViewComponent = deferred;
  globalThis.__sporaHoldLayers = holdLayers;
}
