"""Checks what a schema cannot: rendered chart manifests and docker/compose.yaml against the gateway.

Usage: check-manifests.py SETTINGS_FILE (--chart RENDERED.yaml | --compose COMPOSE.yaml)...
SETTINGS_FILE lists the environment variables src/config.ts reads, one a line (SETTING_NAMES).
Exits 1 with one line per problem.
"""

import re
import sys

import yaml

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_chart(path: str, settings: set[str]) -> None:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    sets = by_kind.get("StatefulSet", [])
    if len(sets) != 1:
        problem(path, f"expected one StatefulSet, found {len(sets)}")
        return
    sts = sets[0]
    pod = sts["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"] for p in container.get("ports", [])}
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in by_kind.get("Secret", [])}

    # Every variable the container gets is a setting the gateway reads.
    for env in container.get("env", []):
        if env["name"] not in settings:
            problem(path, f"env {env['name']} is not a setting src/config.ts reads")
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in secrets and not ref.get("optional"):
            if ref["key"] not in secrets[ref["name"]]:
                problem(path, f"env {env['name']} needs key {ref['key']} the chart's Secret does not have")
    # Files named by *_FILE settings are on a mounted volume.
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    for env in container.get("env", []):
        if env["name"].endswith("_FILE") and not any(env["value"].startswith(m + "/") for m in mounts):
            problem(path, f"env {env['name']}={env['value']} is on no mounted volume")
    # One CONSUMER_GROUP_PREFIX for every pod: replicas of one deployment share their state through Kafka.
    prefix = [e for e in container.get("env", []) if e["name"] == "CONSUMER_GROUP_PREFIX"]
    if len(prefix) != 1 or "value" not in prefix[0] or "$(" in prefix[0]["value"]:
        problem(path, f"CONSUMER_GROUP_PREFIX must be one value shared by every pod, got {prefix}")
    for mount in ("/data", "/tmp"):
        if mount not in mounts:
            problem(path, f"no volume at {mount} (the root filesystem is read-only)")
    if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        problem(path, "the container's root filesystem is not read-only")
    probes = {k: container.get(k, {}).get("httpGet", {}).get("path") for k in ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        problem(path, f"probes are {probes}")

    services = by_kind.get("Service", [])
    for svc in services:
        if not matches(svc["spec"].get("selector", {}), pod_labels):
            problem(path, f"Service {svc['metadata']['name']} selects no gateway pod")
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                problem(path, f"Service {svc['metadata']['name']} targets port {p['targetPort']} the pod lacks")
    headless = [s for s in services if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    if not headless or headless[0]["spec"].get("clusterIP") != "None":
        problem(path, f"StatefulSet serviceName {sts['spec']['serviceName']} is not a headless Service")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            problem(path, "the PodDisruptionBudget selects no gateway pod")
    for np in by_kind.get("NetworkPolicy", []):
        if not matches(np["spec"]["podSelector"]["matchLabels"], pod_labels):
            problem(path, "the NetworkPolicy selects no gateway pod")

    # No schema for the Prometheus Operator's CRD offline: check what it must point at.
    for sm in by_kind.get("ServiceMonitor", []):
        chosen = [s for s in services if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if len(chosen) != 1:
            problem(path, f"the ServiceMonitor selects {len(chosen)} Services (each pod would be scraped that often)")
            continue
        names = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in names or ep.get("path") != "/metrics":
                problem(path, f"ServiceMonitor endpoint {ep} is not port {sorted(names)} path /metrics")
            cred = ep.get("authorization", {}).get("credentials")
            if cred and cred["name"] in secrets and cred["key"] not in secrets[cred["name"]] and not cred.get("optional"):
                problem(path, f"ServiceMonitor needs key {cred['key']} the chart's Secret does not have")


def check_compose(path: str, settings: set[str]) -> None:
    text = open(path).read()
    gateway = yaml.safe_load(text)["services"]["gateway"]
    names = set(gateway.get("environment", {}))
    # The optional TLS/SASL settings are commented out: `      # KAFKA_SSL: "true"`.
    names |= set(re.findall(r"^\s*#\s*(KAFKA_[A-Z_]+):", text, re.M))
    for name in sorted(names):
        if name not in settings:
            problem(path, f"the gateway service sets {name}, which src/config.ts does not read")
    for name in ("KAFKA_SSL", "KAFKA_SASL_MECHANISM"):
        if name not in names:
            problem(path, f"the gateway service does not mention {name} (commented out is enough)")


def main() -> None:
    args = sys.argv[1:]
    settings = set(open(args[0]).read().split())
    if len(settings) < 10:
        sys.exit(f"{args[0]} lists {len(settings)} settings; expected the gateway's whole list")
    pairs = args[1:]
    if not pairs or len(pairs) % 2:
        sys.exit(__doc__)
    for flag, path in zip(pairs[::2], pairs[1::2]):
        {"--chart": check_chart, "--compose": check_compose}[flag](path, settings)
    for line in problems:
        print(line, file=sys.stderr)
    sys.exit(1 if problems else 0)


main()
