// Stands in for the parts of Vitessce that spora-sd's view never shows: the 3D spatial views
// (@vitessce/spatial-three and @vitessce/spatial-accelerated, with three.js), which spatialBeta
// imports lazily (build.mjs, SWAPPED). Vitessce loads each behind an error boundary, so asking for
// one shows its "not available" message.
function leftOut() {
  throw new Error("this Vitessce view is not in spora-sd's bundle (see js/vitessce-bundle/build.mjs)");
}
export const SpatialWrapper = leftOut;
export default leftOut;
