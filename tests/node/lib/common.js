'use strict';
// Shared helpers for the test scripts: every script talks to pytest through stdout, one line per event.
// A line is either the bare word READY (the listener is online) or one JSON object with an "event" key.
// Human-readable diagnostics go to stderr.

const crypto = require('crypto');

let exiting = false;

function emit(event, fields) {
  if (exiting) return;
  process.stdout.write(JSON.stringify(Object.assign({ event: event }, fields || {})) + '\n');
}

// Exit once stdout has been flushed: a pipe write larger than the pipe buffer completes asynchronously,
// so a plain process.exit() could cut the last lines short.
function exit(code) {
  if (exiting) return;
  exiting = true;
  process.exitCode = code;
  process.stdout.write('', () => process.exit(code));
}

// A WebSocket message as an event: small binaries in full (base64), large ones by length and digest.
function describeMessage(data, binary) {
  if (!binary) return { binary: false, text: String(data) };
  const buf = Buffer.from(data);
  const out = { binary: true, length: buf.length, sha256: sha256(buf) };
  if (buf.length <= 4096) out.base64 = buf.toString('base64');
  return out;
}

function ready() {
  process.stdout.write('READY\n');
}

function describeError(err) {
  if (!err) return 'unknown error';
  if (err instanceof Error) return err.message || String(err);
  // ws 1.x hands the raw error object to onerror; ws 6 hands an ErrorEvent-like object
  if (err.message) return err.message;
  if (err.error && err.error.message) return err.error.message;
  if (err.type) return 'websocket ' + err.type;
  return String(err);
}

// Print the reason on stdout (for the test) and stderr (for a human), then exit with `code`.
function fail(code, what, err) {
  if (exiting) return;
  const message = what + ': ' + describeError(err);
  emit('fatal', { message: message, exitCode: code });
  process.stderr.write(message + '\n');
  exit(code);
}

function usage(text) {
  process.stderr.write('usage: ' + text + '\n');
  process.exit(64);
}

// Deterministic payload shared with the Python side (tests/support/node.py pattern_bytes).
function patternBytes(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// Milliseconds before a script gives up on its peer (the Python side passes a scaled value).
function timeoutMs(defaultMs) {
  const v = parseInt(process.env.NODE_TEST_TIMEOUT_MS || '', 10);
  return Number.isFinite(v) && v > 0 ? v : defaultMs;
}

// Split argv into positional arguments and --flag value pairs.
function parseArgs(argv) {
  const positional = [];
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1);
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) flags[a.slice(2)] = argv[++i];
      else flags[a.slice(2)] = true;
    } else {
      positional.push(a);
    }
  }
  return { positional, flags };
}

process.on('uncaughtException', (err) => fail(70, 'uncaught exception', err));

module.exports = { emit, exit, describeMessage, ready, fail, usage, describeError, patternBytes, sha256, timeoutMs, parseArgs };
