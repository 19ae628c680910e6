// Stands in for the parts of the npm `vitessce` build that spora-sd's view never shows: the 3D
// spatial views (three.js), HiGlass and Neuroglancer (build.mjs maps their chunks here). Vitessce
// loads each lazily, behind an error boundary, so asking for one shows its "not available" message.
function leftOut() {
  throw new Error("this Vitessce view is not in spora-sd's bundle (see js/vitessce-bundle/build.mjs)");
}
export const SpatialWrapper = leftOut;
export const a = { SpatialWrapper: leftOut };
export const HiGlassComponent = leftOut;
export default leftOut;
