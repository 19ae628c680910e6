// Channel statistics for Vitessce's layer controller, off the page's main thread and once per
// channel. build.mjs makes Viv's statistics function call globalThis.__sporaChannelStatsSync
// (channel-stats.js, for the callers that need an answer at once), and the startup path (the slider
// range of every shown channel, patch "stats-async") await globalThis.__sporaChannelStats(loader,
// selection): it reads the channel's raster from the loader (the coarsest level) and computes the
// statistics in one Web Worker (build.mjs inlines stats-worker.js as __SPORA_STATS_WORKER__). Vitessce
// asks for the same channel several times while the view starts (16 asks for 6 channels): the answer
// is kept per loader and selection, so each channel is read and computed once. The worker gets a
// copy of the pixels: the raster is Viv's, which it keeps. Where no worker can start, the
// statistics are computed on the main thread.
import { channelStats } from "./channel-stats.js";

let worker = null;
let nextId = 0;
const pending = new Map(); // id -> {resolve, reject}
const answers = new WeakMap(); // loader -> Map(selection as JSON -> Promise of the statistics)

function startWorker() {
  const url = URL.createObjectURL(new Blob([__SPORA_STATS_WORKER__], { type: "text/javascript" }));
  worker = new Worker(url);
  worker.onmessage = ({ data }) => {
    const task = pending.get(data.id);
    pending.delete(data.id);
    if (data.error !== undefined) task.reject(new Error(`channel statistics: ${data.error}`));
    else task.resolve(data.stats);
  };
}

function offThread(values) {
  if (worker === null) {
    try {
      startWorker();
    } catch {
      return Promise.resolve(channelStats(values));
    }
  }
  const id = nextId++;
  const copy = values.slice();
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, values: copy }, [copy.buffer]);
  });
}

/** The statistics of one channel (`selection`) of `loader`'s raster, computed once per channel. */
export function loaderChannelStats(loader, selection) {
  let known = answers.get(loader);
  if (known === undefined) {
    known = new Map();
    answers.set(loader, known);
  }
  const key = JSON.stringify(selection ?? null);
  let answer = known.get(key);
  if (answer === undefined) {
    answer = loader.getRaster({ selection }).then((raster) => offThread(raster.data));
    answer.catch(() => known.delete(key)); // a failed read is asked again next time
    known.set(key, answer);
  }
  return answer;
}

const DTYPE_MAX = { Uint8: 255, Uint16: 65535, Uint32: 4294967295, Int8: 127, Int16: 32767, Int32: 2147483647 };

/**
 * The ranges of a loader's default layer (build.mjs, patch "default ranges"): the data type's, for
 * every channel of `selections`, in the shape of Vitessce's statistics ({domains, sliders}), without
 * reading a pixel. Only the old "spatial" view uses that layer; the page's views follow the config.
 *
 *   defaultRanges({ dtype: "Uint16" }, [{ c: 0 }]).domains  // [[0, 65535]]
 */
export function defaultRanges(loader, selections) {
  const level = Array.isArray(loader) ? loader[loader.length - 1] : loader;
  const range = () => [0, DTYPE_MAX[level.dtype] ?? 1];
  return { domains: selections.map(range), sliders: selections.map(range) };
}

if (typeof window !== "undefined") {
  globalThis.__sporaDefaultRanges = defaultRanges;
  globalThis.__sporaChannelStats = loaderChannelStats;
  globalThis.__sporaChannelStatsSync = channelStats;
}
