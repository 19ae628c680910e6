// Remembers the WebGL parameters that never change for a context: its vendor, renderer and
// version strings. luma.gl (deck.gl's GL layer, under Viv) asks for all of them every time it
// assembles a shader, i.e. for every layer of every image tile, and Chromium answers each ask with
// a synchronous round trip to its GPU process, which waits behind all the drawing queued before it
// (seconds in all with the software renderer). Imported first by index.js, before any context exists.
const CONSTANT = new Set([
  0x1f00, // VENDOR
  0x1f01, // RENDERER
  0x1f02, // VERSION
  0x8b8c, // SHADING_LANGUAGE_VERSION
  0x9245, // UNMASKED_VENDOR_WEBGL
  0x9246, // UNMASKED_RENDERER_WEBGL
]);

function remember(proto) {
  if (proto === undefined || proto.getParameter.sporaRemembers) return;
  const getParameter = proto.getParameter;
  const known = new WeakMap(); // context -> Map(pname -> value)
  proto.getParameter = function (pname) {
    if (!CONSTANT.has(pname)) return getParameter.call(this, pname);
    let values = known.get(this);
    if (values === undefined) {
      values = new Map();
      known.set(this, values);
    }
    if (!values.has(pname)) values.set(pname, getParameter.call(this, pname));
    return values.get(pname);
  };
  proto.getParameter.sporaRemembers = true;
}

if (typeof window !== "undefined") {
  remember(window.WebGL2RenderingContext?.prototype);
  remember(window.WebGLRenderingContext?.prototype);
}
