// Stands in for mathjs in @vitessce/spatial-utils (build.mjs, SWAPPED), which uses three of its
// functions, on the physical pixel sizes of images: unit("0.5 um"), divide() of two lengths (a
// number) and compare() of two lengths. mathjs builds all of its functions (typed-function
// signatures for every type) when the bundle is evaluated: about 100 ms of the main thread before
// the view's first tile, and 140 kB to parse. This module knows lengths, with the names and
// prefixes of mathjs 9 (its LENGTH units, plurals included); build.mjs checks it against mathjs
// for every one of them before it writes the bundle. Any other unit is an error, as an unknown
// name is in mathjs: an image's spatial axes are lengths (OME-NGFF).

const SHORT = {
  "": 1, da: 10, h: 100, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, Z: 1e21, Y: 1e24,
  d: 0.1, c: 0.01, m: 0.001, u: 1e-6, n: 1e-9, p: 1e-12, f: 1e-15, a: 1e-18, z: 1e-21, y: 1e-24,
};
const LONG = {
  "": 1, deca: 10, hecto: 100, kilo: 1e3, mega: 1e6, giga: 1e9, tera: 1e12, peta: 1e15, exa: 1e18,
  zetta: 1e21, yotta: 1e24, deci: 0.1, centi: 0.01, milli: 0.001, micro: 1e-6, nano: 1e-9,
  pico: 1e-12, femto: 1e-15, atto: 1e-18, zepto: 1e-21, yocto: 1e-24,
};
const NONE = { "": 1 };
// name -> [metres, prefixes]; mathjs' own values (its "rd" is 5.02921 m, its "rod" 5.0292 m)
export const LENGTH_UNITS = {
  meter: [1, LONG], meters: [1, LONG], m: [1, SHORT],
  inch: [0.0254, NONE], inches: [0.0254, NONE], in: [0.0254, NONE],
  foot: [0.3048, NONE], feet: [0.3048, NONE], ft: [0.3048, NONE],
  yard: [0.9144, NONE], yards: [0.9144, NONE], yd: [0.9144, NONE],
  mile: [1609.344, NONE], miles: [1609.344, NONE], mi: [1609.344, NONE],
  link: [0.201168, NONE], links: [0.201168, NONE], li: [0.201168, NONE],
  rod: [5.0292, NONE], rods: [5.0292, NONE], rd: [5.02921, NONE],
  chain: [20.1168, NONE], chains: [20.1168, NONE], ch: [20.1168, NONE],
  angstrom: [1e-10, NONE], angstroms: [1e-10, NONE],
  mil: [0.0000254, NONE],
};

const NUMBER_AND_NAME = /^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]+)\s*$/;

/** The metres of one unit name, a unit's own name first (as mathjs: "m" is metre, not milli-). */
function metresOf(name) {
  const exact = LENGTH_UNITS[name];
  if (exact) return exact[0];
  for (const [unitName, [metres, prefixes]] of Object.entries(LENGTH_UNITS)) {
    if (name.endsWith(unitName)) {
      const prefix = prefixes[name.slice(0, name.length - unitName.length)];
      if (prefix !== undefined) return metres * prefix;
    }
  }
  throw new SyntaxError(`Unit "${name}" not found.`);
}

class Length {
  constructor(value, metres, text) {
    this.value = value * metres; // in metres, as mathjs normalises: value x (unit x prefix)
    this.text = text;
  }

  equals(other) {
    return compare(this, other) === 0;
  }

  toString() {
    return this.text;
  }
}

/** A length from "<number> <unit>", e.g. "0.5 um" (mathjs' unit(string) for lengths). */
export function unit(text) {
  const match = NUMBER_AND_NAME.exec(String(text));
  if (!match) throw new SyntaxError(`Unit "${String(text).trim()}" not found.`);
  return new Length(Number(match[1]), metresOf(match[2]), String(text));
}

function checked(a, b, name) {
  if (!(a instanceof Length) || !(b instanceof Length)) {
    throw new TypeError(`${name}: lengths only in spora-sd's bundle (js/vitessce-bundle/length-units.js)`);
  }
}

/** The ratio of two lengths (a number, as mathjs gives for a dimensionless quotient). */
export function divide(a, b) {
  checked(a, b, "divide");
  return a.value / b.value;
}

/** -1, 0 or 1, as mathjs' compare (equal as its nearlyEqual has it). */
export function compare(a, b) {
  checked(a, b, "compare");
  const x = a.value;
  const y = b.value;
  const diff = Math.abs(x - y);
  // mathjs' nearlyEqual: an absolute difference under the double's epsilon, or a relative one under 1e-12
  if (x === y || diff < Number.EPSILON || diff <= 1e-12 * Math.max(Math.abs(x), Math.abs(y))) return 0;
  return x > y ? 1 : -1;
}
