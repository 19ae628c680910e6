// Stands in for @nebula.gl/edit-modes in @nebula.gl/layers' editable GeoJSON layer and in
// @vitessce/gl's selection layer (build.mjs, NARROWED). Vitessce's lasso uses two edit modes
// (drawing a polygon by dragging, viewing), and the layer's default is a third (drawing a polygon):
// those are nebula.gl's own. The layer's index of modes by name (for string modes, which Vitessce
// never passes) makes one of every other mode when the bundle is evaluated, which pulled in all of
// them with turf's transforms and buffer; here they are classes that can be made, and fail when used.
export { ViewMode } from "@nebula.gl/edit-modes/dist-es6/lib/view-mode.js";
export { DrawPolygonMode } from "@nebula.gl/edit-modes/dist-es6/lib/draw-polygon-mode.js";
export { DrawPolygonByDraggingMode } from "@nebula.gl/edit-modes/dist-es6/lib/draw-polygon-by-dragging-mode.js";

function leftOut() {
  throw new Error("this nebula.gl edit mode is not in spora-sd's bundle (see js/vitessce-bundle/edit-modes.js)");
}

class LeftOutMode {}
// what the editable layer calls on its mode
for (const method of ["handleClick", "handlePointerMove", "handleStartDragging", "handleStopDragging", "handleDragging", "handleKeyUp", "getGuides", "getTooltips"]) {
  LeftOutMode.prototype[method] = leftOut;
}

export class ModifyMode extends LeftOutMode {}
export class SnappableMode extends LeftOutMode {}
export class TranslateMode extends LeftOutMode {}
export class TransformMode extends LeftOutMode {}
export class ScaleMode extends LeftOutMode {}
export class RotateMode extends LeftOutMode {}
export class DuplicateMode extends LeftOutMode {}
export class SplitPolygonMode extends LeftOutMode {}
export class ExtrudeMode extends LeftOutMode {}
export class ElevationMode extends LeftOutMode {}
export class DrawPointMode extends LeftOutMode {}
export class DrawLineStringMode extends LeftOutMode {}
export class DrawRectangleMode extends LeftOutMode {}
export class DrawSquareFromCenterMode extends LeftOutMode {}
export class DrawCircleFromCenterMode extends LeftOutMode {}
export class DrawCircleByDiameterMode extends LeftOutMode {}
export class DrawEllipseByBoundingBoxMode extends LeftOutMode {}
export class DrawRectangleUsingThreePointsMode extends LeftOutMode {}
export class DrawEllipseUsingThreePointsMode extends LeftOutMode {}
export class Draw90DegreePolygonMode extends LeftOutMode {}
