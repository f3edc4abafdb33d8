// The reference handler's server for bench/frame_cost.py: node frame_cost_ref.mjs HANDLER.mjs PORT
//
// HANDLER.mjs is the reference media stream handler transpiled from its TypeScript
// (bench/frame_cost.py does that with esbuild into a cache directory; the handler is
// not part of this repository). It runs as written, with a transcription provider
// whose sessions accept audio and do nothing, and every stream accepted.
import http from "node:http";
import { pathToFileURL } from "node:url";

const [handlerPath, port] = process.argv.slice(2);
const { MediaStreamHandler } = await import(pathToFileURL(handlerPath).href);

const provider = {
  createSession: () => ({
    connect: async () => {},
    sendAudio: (_audio) => {},
    close: () => {},
  }),
};

const handler = new MediaStreamHandler({
  transcriptionProvider: provider,
  providerConfig: {},
  shouldAcceptStream: () => true,
  // Limits out of the way, as bench/common.py does for ours.
  maxConnections: 5000,
  maxPendingConnections: 5000,
  maxPendingConnectionsPerIp: 5000,
  preStartTimeoutMs: 30000,
});

const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
server.on("upgrade", (req, socket, head) => handler.handleUpgrade(req, socket, head));
server.listen(Number(port), "127.0.0.1");
