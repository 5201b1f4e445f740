"""Consistency checks of the deployment files, run by .ci/validate-deploy.sh.

Each subcommand prints what it checked and exits non-zero on the first
problem list. PromQL is parsed with promql-parser (the Rust parser's Python
binding); the same expressions are also handed to promtool by the caller.
Metric names are checked against those host/src/telemetry.rs registers.

  dashboard DASHBOARD_JSON RULES_OUT   panels, targets, PromQL, metric names;
                                       writes the expressions as recording rules
  rules PROMETHEUSRULE_YAML RULES_OUT  metric names of the alerts; writes spec
                                       as a plain Prometheus rules file
  env COMPOSE CONFIGMAP SECRET CONFIG_RS
                                       one set of host variables everywhere, all
                                       of them read by the host
  manifests BUILT_YAML DASHBOARD_JSON  cross-field facts of the built base
  podmonitor BUILT_YAML                the PodMonitor of the built base +
                                       components against the Deployment and
                                       the PrometheusRule (no CRD schema here)
  docker DOCKERFILE DOCKERIGNORE COMPOSE
                                       stages compose builds exist, the image
                                       facts, nothing the build needs ignored
"""

import fnmatch
import functools
import json
import pathlib
import re
import sys

import promql_parser
import yaml

# The metrics the host registers, read from its source: the name literal passed
# to counter(), gauge() and histogram() (host/src/telemetry.rs), or to
# HistogramOpts::new() for a histogram registered by hand.
TELEMETRY_RS = pathlib.Path(__file__).resolve().parent.parent / "host/src/telemetry.rs"
# From the prometheus crate's process collector, registered on Linux.
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes"}


@functools.cache
def registered_metrics(path=TELEMETRY_RS):
    """Every series name the host exposes, from the registration calls in path."""
    text = path.read_text(encoding="utf-8")
    name = r'\(\s*\w+\s*,\s*"([a-z_:][a-z0-9_:]*)"'
    counters = set(re.findall(r"\bcounter" + name, text))
    gauges = set(re.findall(r"\bgauge" + name, text))
    histograms = set(re.findall(r"\bhistogram" + name, text))
    histograms |= set(re.findall(r'\bHistogramOpts::new\(\s*"([a-z_:][a-z0-9_:]*)"', text))
    if not (counters and gauges and histograms):
        sys.exit(f"{path}: found no counter, gauge or histogram registrations")
    allowed = counters | gauges | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
    if "ProcessCollector" in text:
        allowed |= PROCESS_METRICS
    return allowed


# Grafana variables, replaced by something PromQL accepts.
GRAFANA_VARS = [
    (re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}"), "5m"),
    (re.compile(r"\$\{?agent_id\}?"), ".*"),
]


def fail(problems):
    for p in problems:
        print(f"  FAIL {p}")
    sys.exit(1)


def metric_names(expr):
    """Every metric name a PromQL expression selects; None for a nameless selector."""
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def check_names(where, expr, problems):
    try:
        names = metric_names(expr)
    except Exception as e:  # the parser's own error type is not exported
        problems.append(f"{where}: PromQL does not parse: {e}")
        return
    if not names:
        problems.append(f"{where}: selects no metric")
    for n in names:
        if n is None:
            problems.append(f"{where}: selector without a metric name")
        elif n not in registered_metrics():
            problems.append(f"{where}: unknown metric {n!r}")


def substitute(expr):
    for pattern, value in GRAFANA_VARS:
        expr = pattern.sub(value, expr)
    if "$" in expr:
        raise ValueError(f"unhandled Grafana variable in {expr!r}")
    return expr


def cmd_dashboard(path, rules_out):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    problems = []
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.append(f"dashboard has no {key!r}")
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.append("no datasource variable")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q or "")
        if v["type"] == "query":
            if not m:
                problems.append(f"variable {v['name']}: unexpected query {q!r}")
            elif m.group(1) not in registered_metrics():
                problems.append(f"variable {v['name']}: unknown metric {m.group(1)!r}")

    ids, exprs, cells = set(), [], {}
    panels = list(dash.get("panels", []))
    for p in panels:
        panels.extend(p.get("panels", []))  # collapsed rows hold their panels
    for p in panels:
        pid = p.get("id")
        if pid in ids:
            problems.append(f"panel id {pid} used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not (0 <= g.get("x", -1) and g.get("x", 0) + g.get("w", 0) <= 24 and g.get("h", 0) > 0):
            problems.append(f"panel {pid} ({p.get('title')}): bad gridPos {g}")
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells and cells[(x, y)] != pid:
                    problems.append(f"panel {pid} overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = pid
        if p.get("type") == "row":
            continue
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"panel {pid} ({p.get('title')}): no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"panel {pid}: duplicate refId")
        for t in targets:
            where = f"panel {pid} ({p.get('title')}) {t.get('refId')}"
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: datasource is not the ${{datasource}} variable")
            try:
                expr = substitute(t["expr"])
            except (KeyError, ValueError) as e:
                problems.append(f"{where}: {e}")
                continue
            check_names(where, expr, problems)
            exprs.append((where, expr))
    if problems:
        fail(problems)
    rules = {
        "groups": [
            {
                "name": "dashboard-expressions",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)
                ],
            }
        ]
    }
    with open(rules_out, "w", encoding="utf-8") as f:
        yaml.safe_dump(rules, f, sort_keys=False)
    print(f"  ok: {len(panels)} panels, {len(exprs)} PromQL expressions, "
          f"all metric names registered in {TELEMETRY_RS.name}")


def cmd_rules(path, rules_out):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    problems = []
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PrometheusRule":
        problems.append("not a monitoring.coreos.com/v1 PrometheusRule")
    if not doc.get("metadata", {}).get("name"):
        problems.append("PrometheusRule has no metadata.name")
    spec = doc.get("spec") or {}
    if set(spec) != {"groups"}:
        problems.append(f"spec keys {sorted(spec)}: expected only 'groups'")
    count = 0
    for g in spec.get("groups", []):
        for r in g.get("rules", []):
            count += 1
            name = r.get("alert") or r.get("record")
            if r.get("alert") and "severity" not in r.get("labels", {}):
                problems.append(f"alert {name}: no severity label")
            check_names(f"rule {name}", r.get("expr", ""), problems)
    if problems:
        fail(problems)
    with open(rules_out, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    print(f"  ok: {count} rules, all metric names registered in {TELEMETRY_RS.name}")


def cmd_env(compose_path, configmap_path, secret_path, config_rs):
    with open(compose_path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    with open(configmap_path, encoding="utf-8") as f:
        configmap = yaml.safe_load(f)
    with open(secret_path, encoding="utf-8") as f:
        secret = yaml.safe_load(f)
    with open(config_rs, encoding="utf-8") as f:
        known = set(re.findall(r'pub const [A-Z0-9_]+: &str = "([A-Z0-9_]+)";', f.read()))
    problems = []
    if not known:
        problems.append(f"{config_rs}: no variable constants found")
    compose_env = set(compose["x-host-environment"])
    k8s_env = set(configmap["data"]) | set(secret["stringData"])
    overlap = set(configmap["data"]) & set(secret["stringData"])
    if overlap:
        problems.append(f"in both the ConfigMap and the Secret: {sorted(overlap)}")
    if compose_env != k8s_env:
        problems.append(
            f"compose and k8s differ: only compose {sorted(compose_env - k8s_env)}, "
            f"only k8s {sorted(k8s_env - compose_env)}"
        )
    for name in sorted(compose_env | k8s_env):
        if known and name not in known:
            problems.append(f"{name} is not a variable the host reads ({config_rs})")
    for service in ("agent-host", "agent-host-local"):
        env = compose["services"][service]["environment"]
        missing = compose_env - set(env)
        if missing:
            problems.append(f"compose service {service} lacks {sorted(missing)}")
    if problems:
        fail(problems)
    unset = sorted(known - compose_env)
    print(f"  ok: {len(compose_env)} variables, same in compose and k8s, all read by the host")
    if unset:
        print(f"  note: host variables left at their built-in defaults: {', '.join(unset)}")


def cmd_manifests(built_path, dashboard_path):
    with open(built_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault((d["kind"], d["metadata"]["name"]), d)
    problems = []
    cm = by_kind[("ConfigMap", "agent-host-config")]["data"]
    dep = by_kind[("Deployment", "agent-host")]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    port = int(cm["PORT"])
    if c["ports"][0]["containerPort"] != port:
        problems.append("containerPort differs from PORT")
    if pod["metadata"]["annotations"].get("prometheus.io/port") != str(port):
        problems.append("prometheus.io/port differs from PORT")
    for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                        ("readinessProbe", "/health/ready")):
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"{probe} does not GET {path}")
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    sleep_s = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    grace_ms = int(cm["SHUTDOWN_GRACE_MS"])
    tgps = pod["spec"]["terminationGracePeriodSeconds"]
    if not tgps > sleep_s + grace_ms / 1000:
        problems.append(f"terminationGracePeriodSeconds {tgps} <= preStop {sleep_s} s + SHUTDOWN_GRACE_MS")
    sc = c["securityContext"]
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        problems.append("container securityContext is not hardened")
    if pod["spec"]["securityContext"].get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("no RuntimeDefault seccomp profile")
    hpa = by_kind[("HorizontalPodAutoscaler", "agent-host")]["spec"]
    if (hpa["minReplicas"], hpa["maxReplicas"]) != (2, 10):
        problems.append("HPA is not 2..10")
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    if targets != {"cpu": 70, "memory": 80}:
        problems.append(f"HPA targets {targets}")
    if dep["spec"]["replicas"] < hpa["minReplicas"]:
        problems.append("Deployment replicas below the HPA floor")
    dash_cm = by_kind[("ConfigMap", "agent-host-grafana-dashboard")]
    if dash_cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        problems.append("dashboard ConfigMap lacks the grafana_dashboard label")
    with open(dashboard_path, encoding="utf-8") as f:
        if json.loads(dash_cm["data"]["agent-host.json"]) != json.load(f):
            problems.append("dashboard ConfigMap differs from grafana-dashboard.json")
    if any(d["kind"] == "Secret" for d in docs):
        problems.append("a Secret is part of the base (keep secrets out of the kustomization)")
    if problems:
        fail(problems)
    print(f"  ok: {len(docs)} objects; ports, probes, grace period, hardening, HPA and dashboard agree")


def cmd_podmonitor(built_path):
    """No schema for the monitoring.coreos.com CRDs is at hand, so the facts
    that make the PodMonitor scrape the right thing are checked here."""
    with open(built_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    monitors = [d for d in docs if d.get("kind") == "PodMonitor"]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    deps = [d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "agent-host"]
    if len(monitors) != 1 or len(rules) != 1 or len(deps) != 1:
        fail([f"expected one PodMonitor, PrometheusRule and agent-host Deployment, "
              f"found {len(monitors)}, {len(rules)}, {len(deps)}"])
    pm, rule, dep = monitors[0], rules[0], deps[0]
    pod = dep["spec"]["template"]
    if pm.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"PodMonitor apiVersion {pm.get('apiVersion')!r}")
    meta = pm.get("metadata", {})
    if meta.get("namespace") != dep["metadata"].get("namespace"):
        problems.append("PodMonitor and Deployment are in different namespaces")
    release = meta.get("labels", {}).get("release")
    if not release or release != rule["metadata"].get("labels", {}).get("release"):
        problems.append(f"PodMonitor release label {release!r} differs from the PrometheusRule's")
    spec = pm.get("spec") or {}
    unknown = set(spec) - {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                           "podTargetLabels", "sampleLimit"}
    if unknown:
        problems.append(f"PodMonitor spec keys not expected here: {sorted(unknown)}")
    selector = spec.get("selector") or {}
    match = selector.get("matchLabels") or {}
    pod_labels = pod["metadata"].get("labels", {})
    if set(selector) != {"matchLabels"} or not match:
        problems.append("PodMonitor selector is not a non-empty matchLabels")
    elif any(pod_labels.get(k) != v for k, v in match.items()):
        problems.append(f"PodMonitor selector {match} does not match the pod labels {pod_labels}")
    # The Redis pods must not be selected as well.
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet") and d is not dep:
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if match and all(labels.get(k) == v for k, v in match.items()):
                problems.append(f"PodMonitor selector also matches {d['kind']} {d['metadata']['name']}")
    port_names = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        problems.append("PodMonitor has no podMetricsEndpoints")
    for e in endpoints:
        if e.get("port") not in port_names:
            problems.append(f"PodMonitor port {e.get('port')!r} is not a container port name {sorted(port_names)}")
        if e.get("path") != "/metrics":
            problems.append(f"PodMonitor path {e.get('path')!r} is not /metrics")
    if pod["metadata"].get("annotations", {}).get("prometheus.io/path") != "/metrics":
        problems.append("the prometheus.io/path annotation is not /metrics")
    if problems:
        fail(problems)
    print(f"  ok: PodMonitor selects the agent-host pods only, port {endpoints[0]['port']!r}, "
          f"/metrics, release {release!r} as the PrometheusRule (structure only: no CRD schema)")


# What `cargo build` and `cargo xtask plugins` read inside the image build.
BUILD_INPUTS = [
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    ".cargo/config.toml",
    "host/Cargo.toml",
    "sdk/Cargo.toml",
    "xtask/Cargo.toml",
    "loadtest/stubs/Cargo.toml",
    "loadtest/stubs/src/lib.rs",
    "plugins",
    "wit",
]


def ignored(path, patterns):
    """Whether .dockerignore drops path (a simplified reading: last match wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        pat_any = pat[3:] if pat.startswith("**/") else None
        for p in prefixes:
            if fnmatch.fnmatchcase(p, pat) or (pat_any and fnmatch.fnmatchcase(p.split("/")[-1], pat_any)):
                result = not negate
    return result


def cmd_docker(dockerfile, dockerignore, compose_path):
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    with open(dockerignore, encoding="utf-8") as f:
        patterns = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    with open(compose_path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    problems = []
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
    last_from = re.findall(r"^FROM\s+.*$", text, re.M)[-1]
    if not re.search(r"\bAS\s+runtime\s*$", last_from, re.I):
        problems.append("the last stage (the default target) is not `runtime`")
    for name, svc in compose["services"].items():
        target = (svc.get("build") or {}).get("target")
        if target and target not in stages:
            problems.append(f"compose service {name} builds target {target!r}, not a Dockerfile stage")
    for needle, what in (
        (r"^EXPOSE\s+4005\b", "EXPOSE 4005"),
        (r"^HEALTHCHECK\b.*(\n\s+.*)*?/health/live", "a HEALTHCHECK on /health/live"),
        (r"^USER\s+10001", "a non-root USER"),
        # Plugins are built for wasm32-unknown-unknown unless they ask for WASI.
        (r"rustup target add\b[^\n]*\bwasm32-unknown-unknown\b", "the wasm32-unknown-unknown target"),
        (r"rustup target add\b[^\n]*\bwasm32-wasip2\b", "the wasm32-wasip2 target"),
        (r"cargo build --release --locked -p agent-host", "the release build of agent-host"),
        (r"cargo xtask plugins", "the plugin build"),
        # target/ is a cache mount: without this a deleted plugin still ships.
        (r"rm -rf target/plugins\s*\\\n\s*&& cargo xtask plugins",
         "target/plugins emptied right before `cargo xtask plugins`"),
    ):
        if not re.search(needle, text, re.M):
            problems.append(f"Dockerfile lacks {what}")
    for path in BUILD_INPUTS:
        if ignored(path, patterns):
            problems.append(f".dockerignore drops {path}, which the build needs")
    if problems:
        fail(problems)
    print(f"  ok: stages {', '.join(stages)}; compose targets exist; build inputs not ignored")


if __name__ == "__main__":
    commands = {
        "dashboard": cmd_dashboard,
        "rules": cmd_rules,
        "env": cmd_env,
        "manifests": cmd_manifests,
        "podmonitor": cmd_podmonitor,
        "docker": cmd_docker,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
