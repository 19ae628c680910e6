// The zstd codec of the bundle, in place of numcodecs' (which Vitessce's zarrita runs on the page's
// main thread, once per tile *and channel*: Viv asks for each channel of a tile separately, and each
// ask decodes the whole chunk, all channels, again). This one
//   - decodes in a pool of Web Workers (one per core, at most 4), so decoding runs in parallel and
//     the main thread stays free to draw;
//   - decodes equal bytes once: asks that arrive while a chunk is being decoded share that decode,
//     and decoded chunks are kept (least recently used first out, up to CACHE_BYTES), so the other
//     channels of a tile, and tiles seen again, cost nothing. Every caller gets the same decoded
//     array: zarrita's codecs and `get` copy out of it and never write into it.
// A cached chunk is found by a hash of its compressed bytes and then compared byte for byte, so a
// hash collision can never hand out another chunk's pixels.
// build.mjs puts the worker's bundled source in __SPORA_ZSTD_WORKER__ and serves this module to
// Vitessce's zarrita in place of its "numcodecs/zstd" chunk.

const CACHE_BYTES = 256 * 1024 * 1024;
const MAX_WORKERS = 4;

let workers = null;
let nextWorker = 0;
let nextId = 0;
const pending = new Map(); // id -> {resolve, reject}
const inFlight = new Map(); // key -> [{bytes, promise}]
const cache = new Map(); // key -> [{bytes, out}], in least recently used order
let cachedBytes = 0;

export const stats = { decodes: 0, shared: 0, cached: 0 };

function startWorkers() {
  const url = URL.createObjectURL(new Blob([__SPORA_ZSTD_WORKER__], { type: "text/javascript" }));
  const n = Math.max(1, Math.min(MAX_WORKERS, navigator.hardwareConcurrency || 2));
  workers = Array.from({ length: n }, () => {
    const worker = new Worker(url);
    worker.onmessage = ({ data }) => {
      const task = pending.get(data.id);
      pending.delete(data.id);
      if (data.error !== undefined) {
        task.reject(new Error(`zstd: ${data.error}`));
      } else {
        task.resolve(data.out);
      }
    };
    return worker;
  });
}

function decodeInWorker(bytes) {
  if (workers === null) {
    startWorkers();
  }
  const id = nextId++;
  const worker = workers[nextWorker];
  nextWorker = (nextWorker + 1) % workers.length;
  // a copy goes to the worker: the caller's bytes may be a view into a larger buffer it keeps
  const copy = bytes.slice();
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, bytes: copy }, [copy.buffer]);
  });
}

function keyOf(bytes) {
  // FNV-1a over at most 4096 bytes spread over the chunk, plus its length
  let h = 0x811c9dc5;
  const step = Math.max(1, Math.floor(bytes.length / 4096));
  for (let i = 0; i < bytes.length; i += step) {
    h = Math.imul(h ^ bytes[i], 0x01000193);
  }
  return `${bytes.length}:${h >>> 0}`;
}

function same(a, b) {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  // 4 bytes at a time where both views allow it (the chunks are hundreds of kilobytes)
  let i = 0;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const n = a.length >> 2;
    const a4 = new Int32Array(a.buffer, a.byteOffset, n);
    const b4 = new Int32Array(b.buffer, b.byteOffset, n);
    for (; i < n; i++) {
      if (a4[i] !== b4[i]) return false;
    }
    i = n << 2;
  }
  for (; i < a.length; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
}

function remember(key, bytes, out) {
  const entries = cache.get(key) ?? [];
  cache.delete(key);
  entries.push({ bytes: bytes.slice(), out });
  cache.set(key, entries);
  cachedBytes += out.length + bytes.length;
  for (const [oldKey, oldEntries] of cache) {
    if (cachedBytes <= CACHE_BYTES || oldKey === key) break;
    cache.delete(oldKey);
    for (const entry of oldEntries) cachedBytes -= entry.out.length + entry.bytes.length;
  }
}

export async function decodeZstd(bytes) {
  const key = keyOf(bytes);
  const hit = cache.get(key)?.find((entry) => same(entry.bytes, bytes));
  if (hit) {
    cache.delete(key); // most recently used: to the end
    cache.set(key, cache.get(key) ?? [hit]);
    stats.cached++;
    return hit.out;
  }
  const running = inFlight.get(key)?.find((entry) => same(entry.bytes, bytes));
  if (running) {
    stats.shared++;
    return running.promise;
  }
  const entry = { bytes, promise: decodeInWorker(bytes) };
  const list = inFlight.get(key) ?? [];
  list.push(entry);
  inFlight.set(key, list);
  stats.decodes++;
  try {
    const out = await entry.promise;
    remember(key, bytes, out);
    return out;
  } finally {
    const left = inFlight.get(key).filter((e) => e !== entry);
    if (left.length) inFlight.set(key, left);
    else inFlight.delete(key);
  }
}

/** The codec zarrita loads for "zstd" (and "numcodecs.zstd"): decode only; the view never writes. */
export default class PooledZstd {
  static codecId = "zstd";

  static fromConfig() {
    return new PooledZstd();
  }

  async encode() {
    throw new Error("spora-sd's Vitessce bundle only reads zstd chunks");
  }

  async decode(bytes, out) {
    const decoded = await decodeZstd(bytes);
    if (out !== undefined) {
      out.set(decoded);
      return out;
    }
    return decoded;
  }
}
