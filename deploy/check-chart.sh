#!/usr/bin/env bash
# Checks deploy/helm/webhook-gateway and docker/compose.yaml without a cluster or Docker:
#   - helm lint --strict, with the one required value and with ci/secure-values.yaml (3 replicas, TLS with
#     a client certificate, SASL, ServiceMonitor);
#   - helm template of both (and with persistence.enabled=false), and that rendering without kafka.brokers or with a wrong SASL mechanism fails;
#   - the rendered manifests against Kubernetes' own schemas, strict, offline (PyPI's kubernetes-validate),
#     for the oldest Kubernetes the chart supports and the newest the validator knows;
#   - deploy/check-manifests.py: every env the chart or the compose file sets is a setting src/config.ts
#     reads, Services, PDB, NetworkPolicy and ServiceMonitor point at the pods, *_FILE paths are mounted.
# Helm is built once from source with `go install` (no download site is reachable here) and cached, as is
# the validator's virtualenv, in ${XDG_CACHE_HOME:-~/.cache}/webhook-gateway/. Needs go, python3, and node
# with `npm ci` done. Run from anywhere: bash deploy/check-chart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.17.3
VALIDATE_VERSION=1.37.0
# The chart's kubeVersion floor and the newest schemas the validator ships.
KUBE_VERSIONS=(1.27.0 1.37.0)
CHART=deploy/helm/webhook-gateway
cache="${XDG_CACHE_HOME:-$HOME/.cache}/webhook-gateway"
mkdir -p "$cache"
started=$SECONDS

# --- helm, built once.
helm="$cache/helm-$HELM_VERSION/helm"
if [ ! -x "$helm" ]; then
  # Go's own installer puts it in /usr/local/go/bin, which a non-login shell may not have on PATH.
  command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null || {
    echo "deploy/check-chart.sh: \`go\` was not found; it builds helm $HELM_VERSION once (or put a helm binary at $helm)" >&2
    exit 1
  }
  echo "building helm $HELM_VERSION from source into $(dirname "$helm") (once; a few minutes) ..."
  t=$SECONDS
  # Built into a private folder and moved into place whole, so an interrupted build leaves nothing behind.
  staging="$(mktemp -d "$cache/.helm-build-XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  GOBIN="$staging" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$(dirname "$helm")"
  mv "$staging/helm" "$helm"
  echo "helm built in $((SECONDS - t)) s"
fi

# --- kubernetes-validate in a virtualenv of its own.
venv="$cache/kubernetes-validate-$VALIDATE_VERSION"
if [ ! -e "$venv/COMPLETE" ]; then
  echo "installing kubernetes-validate $VALIDATE_VERSION into $venv (once) ..."
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION"
  touch "$venv/COMPLETE"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out" "${staging:-}"' EXIT
required=(--set 'kafka.brokers={kafka-bootstrap:9092}')

echo "--- helm lint"
"$helm" lint --strict "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "${required[@]}"
"$helm" lint --strict "$CHART" --kube-version "${KUBE_VERSIONS[0]}" -f "$CHART/ci/secure-values.yaml"

echo "--- helm template"
# A value the chart cannot do without must stop the render with a sentence saying so.
must_fail() {
  local want="$1"
  shift
  if "$helm" template t "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "$@" >"$out/fail.yaml" 2>"$out/fail.err"; then
    echo "helm template $* rendered; expected it to fail with: $want" >&2
    exit 1
  fi
  grep -q "$want" "$out/fail.err" || {
    echo "helm template $* failed without saying \"$want\":" >&2
    cat "$out/fail.err" >&2
    exit 1
  }
}
must_fail "kafka.brokers is required"
must_fail "kafka.sasl.mechanism must be plain, scram-sha-256 or scram-sha-512" "${required[@]}" \
  --set kafka.sasl.mechanism=gssapi --set kafka.sasl.username=u --set kafka.sasl.password=p
"$helm" template t "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "${required[@]}" >"$out/default.yaml"
"$helm" template t "$CHART" --kube-version "${KUBE_VERSIONS[0]}" -f "$CHART/ci/secure-values.yaml" >"$out/secure.yaml"
"$helm" template t "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "${required[@]}" \
  --set persistence.enabled=false >"$out/ephemeral.yaml"
echo "rendered: default values ($(grep -c '^kind:' "$out/default.yaml") objects), ci/secure-values.yaml ($(grep -c '^kind:' "$out/secure.yaml") objects), persistence.enabled=false"

echo "--- kubernetes-validate --strict (${KUBE_VERSIONS[*]})"
for version in "${KUBE_VERSIONS[@]}"; do
  if ! "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$out/default.yaml" "$out/secure.yaml" \
    "$out/ephemeral.yaml" >"$out/validate.txt" 2>&1; then
    cat "$out/validate.txt" >&2
    exit 1
  fi
  # ServiceMonitor is a CRD with no schema here (check-manifests.py checks it); any other warning fails.
  if grep -v "Couldn't find schema for kind ServiceMonitor" "$out/validate.txt" | grep -q .; then
    cat "$out/validate.txt" >&2
    exit 1
  fi
done

echo "--- settings and references (deploy/check-manifests.py)"
# The project's Node 24 (npm ci's node_modules/.bin/node): the machine's own node may be too old for .ts.
node_bin=node_modules/.bin/node
[ -x "$node_bin" ] || node_bin=node
"$node_bin" -e 'import("./src/config.ts").then((m) => console.log(m.SETTING_NAMES.join("\n")))' >"$out/settings.txt"
"$venv/bin/python" deploy/check-manifests.py "$out/settings.txt" \
  --chart "$out/default.yaml" --chart "$out/secure.yaml" --chart "$out/ephemeral.yaml" \
  --compose docker/compose.yaml

echo "chart and compose checks passed in $((SECONDS - started)) s"
