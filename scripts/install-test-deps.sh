#!/usr/bin/env bash
# What the tests need besides Python packages: Debian's redis-server, haproxy, nginx-light, wrk and valgrind
# (bench.instructions' smoke test), and the
# official Node client libraries (hyco-ws, hyco-https) pinned by tests/node/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in redis-server:redis-server haproxy:haproxy nginx:nginx-light wrk:wrk node:nodejs npm:npm valgrind:valgrind; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

if [ -f tests/node/package.json ] && [ ! -d tests/node/node_modules ]; then
  # Debian 12's npm 9.2 crashes on the overrides hyco-ws/hyco-https need ("Invalid comparator"); 9.6+ is fine.
  npm_cmd=(npm)
  if ! printf '%s\n%s\n' 9.6.0 "$(npm --version)" | sort -V -C; then npm_cmd=(npx --yes npm@10); fi
  (cd tests/node && "${npm_cmd[@]}" ci --no-audit --no-fund --silent)
fi
