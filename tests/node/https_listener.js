'use strict';
// https_listener.js LISTEN_URL TOKEN
// A hyco-https relayed server:
//   GET  …/hello  -> 200 text, with the request target echoed in X-Request-Url
//   GET  …/big    -> 100 KiB body (too big for the control channel: hyco-https opens the rendezvous itself)
//   POST (any)    -> echoes the body; X-Body-Length / X-Body-Sha256 describe what arrived
//   HEAD (any)    -> headers only from the app's view; it still calls end(data), which hyco-https relays as a body
//   GET  …/nocontent -> 204 (hyco-https sends body:false and then a stray empty binary frame, §2.4)
//   GET  …/chunks -> three writes (a fragmented binary body message, §2.4)
// stdout: READY once the control channel is open; a JSON line per request.
const { emit, exit, ready, fail, usage, describeError, patternBytes, sha256 } = require('./lib/common');
const https = require('hyco-https');

const [url, token] = process.argv.slice(2);
if (!url || !token) usage('node https_listener.js LISTEN_URL TOKEN');

const BIG = patternBytes(100 * 1024);
let listening = false;
let errorsSinceListening = 0;

function handle(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(Buffer.from(c)));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const path = (req.url || '').split('?')[0];
    // Which socket carried the request: the control channel (inline, §2.3a) or a rendezvous (§2.3b).
    const channel = (ws) => (ws === server.controlChannel ? 'control' : 'rendezvous');
    emit('request', {
      method: req.method, url: req.url, headers: req.headers, bodyLength: body.length, sha256: sha256(body),
      channel: channel(req.socket),
    });
    const common = { 'X-Request-Url': req.url, 'X-Request-Method': req.method };
    if (req.method === 'HEAD') {
      res.writeHead(200, Object.assign({ 'Content-Type': 'text/plain', 'X-Head': 'yes' }, common));
      // Deliberately ends with data: hyco-https then sends body:true plus bytes, which the gateway must drop (§2.4).
      res.end('a HEAD response must not carry this body');
    } else if (req.method === 'POST') {
      res.writeHead(200, Object.assign({
        'Content-Type': 'application/octet-stream',
        'X-Body-Length': String(body.length),
        'X-Body-Sha256': sha256(body),
      }, common));
      res.end(body);
    } else if (req.method === 'GET' && path.endsWith('/hello')) {
      res.writeHead(200, Object.assign({ 'Content-Type': 'text/plain; charset=utf-8' }, common));
      res.end('hello from hyco-https');
    } else if (req.method === 'GET' && path.endsWith('/nocontent')) {
      res.writeHead(204, common);
      res.end();
    } else if (req.method === 'GET' && path.endsWith('/chunks')) {
      res.writeHead(200, Object.assign({ 'Content-Type': 'text/plain' }, common));
      res.write('aaa');
      res.write('bbb');
      res.end('ccc');
    } else if (req.method === 'GET' && path.endsWith('/big')) {
      res.writeHead(200, Object.assign({ 'Content-Type': 'application/octet-stream', 'X-Body-Sha256': sha256(BIG) }, common));
      res.end(BIG);
    } else {
      res.writeHead(404, Object.assign({ 'Content-Type': 'text/plain' }, common));
      res.end('no route for ' + req.method + ' ' + path);
    }
    // hyco-https picks the response's socket on end(): the request's own, or a new rendezvous past 64 KiB (§2.7).
    emit('responded', { method: req.method, url: req.url, status: res.statusCode, channel: channel(res.socket) });
  });
  req.on('error', (err) => emit('request_error', { message: describeError(err) }));
}

let server;
try {
  server = https.createRelayedServer({ server: url, token: token }, handle);
} catch (err) {
  fail(2, 'cannot create the hyco-https relayed server', err);
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
  if (!listening) fail(2, 'control channel to ' + url + ' failed', err);
  emit('control_error', { message: describeError(err) });
  if (++errorsSinceListening >= 5) fail(3, 'control channel lost and reconnects keep failing', err);
});

// hyco-https connects the control channel only on listen().
server.listen();

function shutdown() {
  try { server.close(); } catch (e) { /* closing anyway */ }
  exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
