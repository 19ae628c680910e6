// A Web Worker that computes channel statistics (channel-stats.js) off the page's main thread, for
// stats-pool.js. Messages in: {id, values} (a typed array, transferred); out: {id, stats} or {id, error}.
import { channelStats } from "./channel-stats.js";

self.onmessage = (event) => {
  const { id, values } = event.data;
  try {
    self.postMessage({ id, stats: channelStats(values) });
  } catch (error) {
    self.postMessage({ id, error: String(error?.message ?? error) });
  }
};
