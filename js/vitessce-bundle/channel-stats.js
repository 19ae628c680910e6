// Viv's channel statistics (the layer controller's slider range and suggested contrast), computed
// the way spora-sd's bundle does it, in place of Viv's own (build.mjs, patches "stats*"): from
// every k-th pixel, at most SAMPLE of them, copied and sorted natively. Viv went through every pixel
// and sorted them all in place (quickselect with a comparator function), which reordered the
// image's data and took seconds for 1000 x 1000 pixels and six channels on the page's main thread.
// The result has the fields of Viv's: mean, sd, q1, q3, median, domain [min, max] and
// contrastLimits (the 0.05th and 99.95th percentiles of the positive pixels, 0 when none). Above
// SAMPLE pixels the minimum and maximum are the sample's: a slider range can miss a few extreme
// pixels, which spora-sd's windows (set by the config) never use.
//
//   channelStats(new Uint16Array([0, 5, 10])).domain  // [0, 10]
export const SAMPLE = 262144;

export function channelStats(values) {
  const n = values.length;
  const step = Math.max(1, Math.ceil(n / SAMPLE));
  const m = Math.ceil(n / step);
  const sample = new Float64Array(m);
  let sum = 0;
  for (let i = 0, j = 0; j < m; i += step, j++) {
    const v = values[i];
    sample[j] = v;
    sum += v;
  }
  sample.sort(); // numeric, NaN last
  const mean = sum / m;
  let squares = 0;
  for (let j = 0; j < m; j++) squares += (sample[j] - mean) ** 2;
  let first = 0;
  let end = m;
  while (end > 0 && Number.isNaN(sample[end - 1])) end--;
  while (first < end && !(sample[first] > 0)) first++;
  const positive = sample.subarray(first, end);
  const tail = 5e-4;
  return {
    mean,
    sd: (squares / m) ** 0.5,
    q1: sample[Math.floor(m / 4)],
    q3: sample[3 * Math.floor(m / 4)],
    median: sample[Math.floor(m / 2)],
    domain: [end > 0 ? sample[0] : Infinity, end > 0 ? sample[end - 1] : -Infinity],
    contrastLimits: [
      positive[Math.floor(positive.length * tail)] || 0,
      positive[Math.floor(positive.length * (1 - tail))] || 0,
    ],
  };
}
