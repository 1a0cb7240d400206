'use strict';
// ws_sender.js CONNECT_URL TOKEN [--text T] [--binary-size N]
// hyco-ws relayedConnect: sends one text and one binary message, prints what comes back, closes, exits 0.
// Exit codes: 2 connection failed, 3 timed out waiting for echoes, 4 the socket closed early.
const { emit, exit, describeMessage, fail, usage, patternBytes, timeoutMs, parseArgs } = require('./lib/common');
const WebSocket = require('hyco-ws');

const { positional, flags } = parseArgs(process.argv.slice(2));
const [url, token] = positional;
if (!url || !token) usage('node ws_sender.js CONNECT_URL TOKEN [--text T] [--binary-size N]');
const text = typeof flags.text === 'string' ? flags.text : 'hello from hyco-ws \u2713';
const binary = patternBytes(parseInt(flags['binary-size'] || '1024', 10));

const replies = [];
let done = false;

const timer = setTimeout(() => fail(3, 'timed out waiting for echoes', { message: replies.length + ' of 2 received' }),
  timeoutMs(20000));

let ws;
try {
  ws = WebSocket.relayedConnect(url, token, (socket) => {
    emit('open', { protocol: socket.protocol || null });
    socket.send(text);
    socket.send(binary, { binary: true });
  });
} catch (err) {
  fail(2, 'cannot start the connection', err);
}

ws.on('message', (data, fl) => {
  const isBinary = !!(fl && fl.binary);
  emit('message', describeMessage(data, isBinary));
  replies.push(data);
  if (replies.length === 2) {
    done = true;
    clearTimeout(timer);
    ws.close(1000, 'done');
  }
});

ws.on('close', (code, reason) => {
  emit('close', { code: code, reason: reason ? String(reason) : '' });
  if (done) exit(0);
  else fail(4, 'connection closed before both echoes arrived', { message: 'close code ' + code });
});

ws.on('error', (err) => {
  if (done) return;
  fail(2, 'connection to ' + url + ' failed', err);
});
