'use strict';
// http_client.js URL TOKEN METHOD [BODY_BYTES] [--repeat N] [--concurrency N] [--auth header|query|authorization]
// A plain Node http/https request (no relay library) carrying the relay token (§1.4) in the ServiceBusAuthorization
// header (default), the sb-hc-token query parameter, or the Authorization header.
// The body is BODY_BYTES of a fixed pattern. --repeat N makes the request N times in sequence on one keep-alive
// connection. --concurrency N makes N requests at once, request i with BODY_BYTES + i bytes so mix-ups show.
// stdout: one JSON line per response {status, statusMessage, headers, bodyLength, sha256, reusedSocket}.
// Exit codes: 0 all responses received, 2 request failed, 3 timeout.
const http = require('http');
const https = require('https');
const { emit, exit, fail, usage, patternBytes, sha256, timeoutMs, parseArgs } = require('./lib/common');

const { positional, flags } = parseArgs(process.argv.slice(2));
const [url, token, method, bodyBytes] = positional;
if (!url || !token || !method) {
  usage('node http_client.js URL TOKEN METHOD [BODY_BYTES] [--repeat N] [--concurrency N] [--auth header|query|authorization]');
}
const repeat = parseInt(flags.repeat || '1', 10);
const concurrency = parseInt(flags.concurrency || '1', 10);
const auth = flags.auth || 'header';

const mod = url.startsWith('https:') ? https : http;
const agent = new mod.Agent({ keepAlive: true, maxSockets: concurrency });

function once(i) {
  return new Promise((resolve, reject) => {
    const body = bodyBytes ? patternBytes(parseInt(bodyBytes, 10) + (concurrency > 1 ? i : 0)) : null;
    const headers = {};
    let target = url;
    if (auth === 'header') headers.ServiceBusAuthorization = token;
    else if (auth === 'authorization') headers.Authorization = token;
    else if (auth === 'query') target = url + (url.includes('?') ? '&' : '?') + 'sb-hc-token=' + encodeURIComponent(token);
    else usage('--auth must be header, query or authorization');
    if (body) {
      headers['Content-Type'] = 'application/octet-stream';
      headers['Content-Length'] = String(body.length);
    }
    const req = mod.request(target, { method: method, headers: headers, agent: agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const got = Buffer.concat(chunks);
        emit('response', {
          i: i,
          sentLength: body ? body.length : 0,
          sentSha256: body ? sha256(body) : null,
          status: res.statusCode,
          statusMessage: res.statusMessage,
          headers: res.headers,
          bodyLength: got.length,
          sha256: sha256(got),
          text: got.length <= 512 ? got.toString('utf8') : null,
          reusedSocket: !!req.reusedSocket,
        });
        resolve();
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs(30000), () => req.destroy(new Error('timed out after ' + timeoutMs(30000) + ' ms')));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function failed(i, total, err) {
  const timedOut = /timed out/.test(String(err && err.message));
  fail(timedOut ? 3 : 2, method + ' ' + url + ' (request ' + (i + 1) + ' of ' + total + ') failed', err);
}

(async () => {
  if (concurrency > 1) {
    const all = [];
    for (let i = 0; i < concurrency; i++) all.push(once(i).catch((err) => failed(i, concurrency, err)));
    await Promise.all(all);
  } else {
    for (let i = 0; i < repeat; i++) {
      try {
        await once(i);
      } catch (err) {
        failed(i, repeat, err);
        return;
      }
    }
  }
  agent.destroy();
  exit(0);
})();
