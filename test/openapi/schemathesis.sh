#!/usr/bin/env bash
# `npm run test:openapi`: Schemathesis (PyPI) fuzzes a real gateway from its own /openapi.json with every
# check (`--checks all`, stateful links included). The gateway, its embedded broker and Schemathesis run in
# a network namespace of their own with only loopback up (`unshare --net`), so no destination the fuzzer
# registers can be dialled anywhere. Schemathesis is installed once into a venv under ~/.cache; the Kafka
# jars are fetched (once) before entering the namespace. Root (CI) or unprivileged user namespaces needed.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION="4.32.5"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/webhook-gateway/schemathesis"
# Test cases per operation and phase; the whole run takes a few minutes on 2 cores.
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-40}"

if [ "${1:-}" != "--inside" ]; then
  if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  node -e 'import("./src/kafka/jars.ts").then((m) => m.ensureKafkaJars({ log: (l) => console.error(l) }))'
  userns=()
  [ "$(id -u)" = 0 ] || userns=(--map-root-user)
  exec unshare "${userns[@]}" --net bash "$0" --inside
fi

# --- Inside the namespace: only loopback, and it is ours (fixed ports cannot clash with anything).
ip link set lo up
if ip -o link show | grep -v ': lo:' | grep -q 'state UP'; then
  echo "the namespace has an interface besides loopback up" >&2
  exit 1
fi
work="$(mktemp -d)"
token="schemathesis-admin-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
port=8080
url="http://127.0.0.1:$port"
gateway=""
finish() {
  if [ -n "$gateway" ] && kill -0 "$gateway" 2>/dev/null; then
    kill -TERM "$gateway"
    for _ in $(seq 1 40); do kill -0 "$gateway" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$gateway" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap finish EXIT

# Private destinations allowed: the fuzzer's URLs are accepted without DNS (nothing resolves in here) and
# every delivery to them fails inside the namespace.
env -i PATH="$PATH" HOME="$HOME" PORT="$port" HOST=127.0.0.1 DB_PATH="$work/gateway.db" \
  ADMIN_TOKEN="$token" ALLOW_PRIVATE_DESTINATIONS=true LOG_LEVEL=warn TOPIC_PARTITIONS=2 \
  node src/main.ts >"$work/gateway.log" 2>&1 &
gateway=$!
for _ in $(seq 1 180); do
  kill -0 "$gateway" 2>/dev/null || { echo "the gateway exited:" >&2; tail -n 40 "$work/gateway.log" >&2; exit 1; }
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url/readyz" || true)" = 200 ] && break
  sleep 1
done
[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url/readyz" || true)" = 200 ] ||
  { echo "the gateway was not ready within 180 s:" >&2; tail -n 40 "$work/gateway.log" >&2; exit 1; }

report="${SCHEMATHESIS_REPORT_DIR:-$work/report}"
code=0
# One worker: with two, Hypothesis describes its filter lambdas (ast.parse of Schemathesis's sources) in
# two threads at once, and Python 3.11's ast module (Debian 12's python3) can fail that with "SystemError:
# AST constructor recursion depth mismatch", an error of the tool, not of the gateway.
"$venv/bin/schemathesis" --no-color --config-file test/openapi/schemathesis.toml run "$url/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --max-examples "$max_examples" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --request-timeout 20 \
  --generation-database none \
  --report junit --report-dir "$report" || code=$?
if [ "$code" != 0 ]; then
  echo "schemathesis failed ($code); the gateway's last log lines:" >&2
  tail -n 20 "$work/gateway.log" >&2
fi
exit "$code"
