#!/usr/bin/env bash
# Creates or updates one ConfigMap per plugin, agent-host-plugin-<name>, from
# the output of `cargo xtask plugins`: <name>.wasm (binaryData) and, when
# present, <name>.policy.toml (data). Pods with the plugin-configmap component
# pick the change up without a restart.
#
#   k8s/components/plugin-configmap/publish-plugins.sh [PLUGIN_DIR]   # default target/plugins
#
# Environment: NAMESPACE (default atlas); DRY_RUN=1 prints the manifests
# instead of applying them (no cluster needed).
#
# Server-side apply: a client-side `kubectl apply` would copy the whole object
# into the last-applied annotation, which is capped at 256 KiB.
set -euo pipefail

dir=${1:-target/plugins}
namespace=${NAMESPACE:-atlas}
# A ConfigMap is capped at 1 MiB; keep room for metadata.
max_bytes=$((1000 * 1000))

shopt -s nullglob
wasms=("$dir"/*.wasm)
if ((${#wasms[@]} == 0)); then
    echo "no .wasm files in $dir (run: cargo xtask plugins)" >&2
    exit 1
fi

for wasm in "${wasms[@]}"; do
    name=$(basename "$wasm" .wasm)
    policy="$dir/$name.policy.toml"
    args=(--from-file="$name.wasm=$wasm")
    # base64 length: 4 characters per started group of 3 bytes.
    # shellcheck disable=SC2017
    size=$(( ($(stat -c %s "$wasm") + 2) / 3 * 4 ))
    if [[ -f $policy ]]; then
        args+=(--from-file="$name.policy.toml=$policy")
        size=$((size + $(stat -c %s "$policy")))
    fi
    if ((size > max_bytes)); then
        echo "$name: $size bytes once encoded, over the ConfigMap limit; ship it in the image instead" >&2
        exit 1
    fi
    manifest=$(kubectl create configmap "agent-host-plugin-$name" \
        --namespace "$namespace" "${args[@]}" --dry-run=client -o yaml |
        kubectl label --local -f - -o yaml \
            app.kubernetes.io/name=agent-host \
            app.kubernetes.io/part-of=atlas \
            app.kubernetes.io/component=plugin)
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        printf -- '---\n%s\n' "$manifest"
    else
        printf '%s\n' "$manifest" |
            kubectl apply --server-side --force-conflicts --field-manager=publish-plugins -f -
    fi
done
