'use strict';
// ws_listener.js LISTEN_URL TOKEN
// A hyco-ws relayed server that echoes every message back, keeping text as text and binary as binary.
// stdout: READY once the control channel is open; then JSON lines per rendezvous connection and message.
const { emit, exit, describeMessage, ready, fail, usage, describeError } = require('./lib/common');
const WebSocket = require('hyco-ws');

const [url, token] = process.argv.slice(2);
if (!url || !token) usage('node ws_listener.js LISTEN_URL TOKEN');

let listening = false;
let errorsSinceListening = 0;
let connections = 0;

let server;
try {
  server = WebSocket.createRelayedServer({ server: url, token: token }, (ws) => {
    const n = ++connections;
    // hyco-ws hands over the rendezvous socket before it is open; ws.url is the accept address.
    emit('connection', { n: n, url: ws.url, protocol: ws.protocol || null });
    ws.on('open', () => emit('open', { n: n, protocol: ws.protocol || null }));
    ws.on('message', (data, flags) => {
      const binary = !!(flags && flags.binary);
      emit('message', Object.assign({ n: n }, describeMessage(data, binary)));
      ws.send(data, { binary: binary }, (err) => {
        if (err) emit('send_error', { n: n, message: describeError(err) });
      });
    });
    ws.on('close', (code, reason) => emit('close', { n: n, code: code, reason: reason ? String(reason) : '' }));
    ws.on('error', (err) => emit('error', { n: n, message: describeError(err) }));
  });
} catch (err) {
  fail(2, 'cannot create the hyco-ws relayed server', err);
}

server.on('listening', () => {
  errorsSinceListening = 0;
  if (!listening) {
    listening = true;
    ready();
  } else {
    emit('relistening');
  }
});

server.on('error', (err) => {
  // hyco-ws reconnects at once after every error, with no backoff: never let that spin.
  if (!listening) fail(2, 'control channel to ' + url + ' failed', err);
  emit('control_error', { message: describeError(err) });
  if (++errorsSinceListening >= 5) fail(3, 'control channel lost and reconnects keep failing', err);
});

function shutdown() {
  try { server.close(); } catch (e) { /* closing anyway */ }
  exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
