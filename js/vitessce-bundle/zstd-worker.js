// A Web Worker that decompresses Zarr chunks (zstd) off the page's main thread, for zstd-pool.js.
// Messages in: {id, bytes} (the compressed chunk); out: {id, out} (the decoded bytes, transferred)
// or {id, error}. The decoder is numcodecs' (the one zarrita uses), so the bytes are the same.
import Zstd from "numcodecs/zstd";

const codec = Zstd.fromConfig({ level: 0 });

self.onmessage = async (event) => {
  const { id, bytes } = event.data;
  try {
    const out = await codec.decode(bytes);
    self.postMessage({ id, out }, [out.buffer]);
  } catch (error) {
    self.postMessage({ id, error: String(error?.message ?? error) });
  }
};
