"""Summarises one loadtest/run.sh run folder: prints a text report and writes
report.json next to the inputs. Usage: report.py <run folder>"""

import json
import os
import re
import sys
from collections import defaultdict

OUT = sys.argv[1]


def path(name):
    return os.path.join(OUT, name)


def read(name, default=None):
    try:
        with open(path(name)) as f:
            return f.read()
    except FileNotFoundError:
        return default


CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- k6 summary (handleSummary data, or --summary-export) -------------------
summary = json.loads(read("summary.json", "{}"))
metrics = summary.get("metrics", {})


def k6(metric, stat):
    m = metrics.get(metric)
    if m is None:
        return None
    values = m.get("values", m)
    if stat == "rate" and "rate" not in values and "value" in values:
        return values["value"]
    return values.get(stat)


k6_out = {
    "requests": k6("http_reqs", "count"),
    "requests_per_s": k6("http_reqs", "rate"),
    "p50_ms": k6("http_req_duration", "med"),
    "p95_ms": k6("http_req_duration", "p(95)"),
    "p99_ms": k6("http_req_duration", "p(99)"),
    "max_ms": k6("http_req_duration", "max"),
    "failed_rate": k6("http_req_failed", "rate"),
    "checks_rate": k6("checks", "rate"),
    "max_vus": k6("vus_max", "max") or k6("vus_max", "value"),
}

# --- processes --------------------------------------------------------------


def procs(tag):
    out = {}
    for line in (read(f"procs-{tag}.txt") or "").splitlines():
        name, pid, ticks = line.split()
        out[name] = (int(pid), float(ticks))
    return out


before, after = procs("before"), procs("after")
t0 = float(read("time-before.txt", "0"))
t1 = float(read("time-after.txt", "0"))
window = t1 - t0

cpu = {n: (after[n][1] - before[n][1]) / CLK_TCK for n in after if n in before}


def machine(tag):
    f = [int(x) for x in (read(f"machine-{tag}.txt") or "cpu 0").split()[1:]]
    total = sum(f[:8])
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return total, idle


mt0, mi0 = machine("before")
mt1, mi1 = machine("after")
machine_busy = 1 - (mi1 - mi0) / (mt1 - mt0) if mt1 > mt0 else None
# Busy CPU seconds of the whole machine over the window (/proc/stat ticks).
machine_busy_s = ((mt1 - mt0) - (mi1 - mi0)) / CLK_TCK


def memory(tag):
    out = defaultdict(dict)
    for line in (read(f"memory-{tag}.txt") or "").splitlines():
        m = re.match(r"(\S+) (VmHWM|VmRSS):\s+(\d+) kB", line)
        if m:
            out[m.group(1)][m.group(2)] = int(m.group(3)) / 1024
    return out


mem_before, mem_after = memory("before"), memory("after")

k6_time = (read("k6-time.txt") or "").strip().splitlines()
k6_cpu = None
if k6_time:
    try:
        e, u, s, _ = k6_time[-1].split()
        k6_cpu = float(u) + float(s)
    except ValueError:
        pass

# --- host metrics -----------------------------------------------------------
LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prom(name):
    series = []
    for line in (read(name) or "").splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(3) or ""))
            series.append((m.group(1), labels, float(m.group(4))))
    return series


def total(series, name, **want):
    return sum(
        v
        for n, labels, v in series
        if n == name and all(labels.get(k) == w for k, w in want.items())
    )


def by_label(series, name, label):
    out = defaultdict(float)
    for n, labels, v in series:
        if n == name:
            out[labels.get(label, "")] += v
    return out


def delta_by(b, a, name, label):
    x, y = by_label(b, name, label), by_label(a, name, label)
    return {k: y[k] - x.get(k, 0.0) for k in y if y[k] - x.get(k, 0.0) != 0}


def hist_mean(b, a, name, **want):
    s = total(a, name + "_sum", **want) - total(b, name + "_sum", **want)
    c = total(a, name + "_count", **want) - total(b, name + "_count", **want)
    return (s / c if c else None), c


def hist_shares(b, a, name):
    # Cumulative share of observations per bucket bound, from the first bucket
    # that holds any to the first that holds them all ("<=1ms 20%, <=5ms 100%").
    bx, ax = by_label(b, name + "_bucket", "le"), by_label(a, name + "_bucket", "le")
    buckets = sorted(
        ((float(le), ax[le] - bx.get(le, 0.0)) for le in ax), key=lambda t: t[0]
    )
    if not buckets or buckets[-1][1] == 0:
        return "no data"
    n = buckets[-1][1]
    out = []
    for le, count in buckets:
        if count == 0:
            continue
        out.append(f"<={le * 1000:g}ms {count / n * 100:.0f}%")
        if count == n:
            break
    return ", ".join(out)


hosts = sorted(n for n in after if n.startswith("host"))
host_out = {}
for h in hosts:
    b, a = prom(f"metrics-{h}-before.txt"), prom(f"metrics-{h}-after.txt")
    chats = delta_by(b, a, "agents_chat_requests_total", "status")
    ok = chats.get("success", 0.0)
    overhead_mean, _ = hist_mean(b, a, "agents_host_overhead_seconds")
    model_mean, model_calls = hist_mean(b, a, "agents_openai_request_duration_seconds")
    chat_mean, _ = hist_mean(b, a, "agents_chat_request_duration_seconds", status="success")
    plugin = {}
    for tool in delta_by(b, a, "agents_plugin_invocation_duration_seconds_count", "tool"):
        mean, n = hist_mean(b, a, "agents_plugin_invocation_duration_seconds", tool=tool)
        plugin[tool] = {"calls": n, "mean_ms": mean * 1000 if mean is not None else None}
    store = {}
    for op in delta_by(b, a, "agents_session_store_duration_seconds_count", "op"):
        mean, n = hist_mean(b, a, "agents_session_store_duration_seconds", op=op)
        store[op] = {"calls": n, "mean_ms": mean * 1000 if mean is not None else None}
    host_out[h] = {
        "chats_by_status": chats,
        "cpu_s": cpu.get(h),
        "cpu_ms_per_chat": cpu[h] / ok * 1000 if ok and h in cpu else None,
        "peak_rss_mb": mem_after.get(h, {}).get("VmHWM"),
        "rss_before_mb": mem_before.get(h, {}).get("VmRSS"),
        "rss_after_mb": mem_after.get(h, {}).get("VmRSS"),
        "chat_mean_ms": chat_mean * 1000 if chat_mean is not None else None,
        "overhead_mean_ms": overhead_mean * 1000 if overhead_mean is not None else None,
        "overhead_buckets": hist_shares(b, a, "agents_host_overhead_seconds"),
        "model_calls": model_calls,
        "model_mean_ms": model_mean * 1000 if model_mean is not None else None,
        "model_calls_by_status": delta_by(b, a, "agents_openai_api_calls_total", "status"),
        "tools_by_status": delta_by(b, a, "agents_tool_executions_total", "status"),
        "backend_by_status": delta_by(b, a, "agents_backend_requests_total", "status"),
        "plugins": plugin,
        # Guest work is deterministic where CPU time on a shared machine is
        # not: fuel (about one unit per WebAssembly instruction) per chat.
        "fuel_per_chat": {
            k: v / ok
            for k, v in sorted(delta_by(b, a, "agents_plugin_fuel_consumed_total", "plugin").items())
        }
        if ok
        else {},
        "session_store": store,
        "session_store_errors": delta_by(b, a, "agents_session_store_errors_total", "op"),
    }

# PERF=syscalls: `perf stat -x,` counts of host1's system calls over the load
# ("<count>,,syscalls:sys_enter_<name>,..."), per successful chat.
syscalls = {}
for line in (read("perf-stat.csv") or "").splitlines():
    fields = line.split(",")
    if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_") and fields[0].isdigit():
        syscalls[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
if syscalls and "host1" in host_out:
    served = host_out["host1"]["chats_by_status"].get("success", 0.0)
    host_out["host1"]["syscalls_per_chat"] = (
        {k: v / served for k, v in syscalls.items()} if served else {}
    )

all_ok = sum(h["chats_by_status"].get("success", 0.0) for h in host_out.values())
all_cpu = sum(h["cpu_s"] or 0 for h in host_out.values())

redis = {}
for line in (read("redis-memory.txt") or "").splitlines():
    if ":" in line:
        k, v = line.strip().split(":", 1)
        if k in ("used_memory", "used_memory_peak", "used_memory_rss", "used_memory_dataset"):
            redis[k + "_mb"] = int(v) / 1024 / 1024
if read("redis-dbsize.txt"):
    redis["keys"] = int(read("redis-dbsize.txt").strip())

report = {
    "run": (read("run-info.txt") or "").strip().splitlines(),
    "window_s": window,
    "k6": k6_out,
    "hosts": host_out,
    "all_hosts": {
        "chats_ok": all_ok,
        "cpu_s": all_cpu,
        "cpu_ms_per_chat": all_cpu / all_ok * 1000 if all_ok else None,
    },
    "cpu_s_by_process": {**cpu, **({"k6": k6_cpu} if k6_cpu is not None else {})},
    "machine_busy_fraction": machine_busy,
    "machine_busy_cpu_s": machine_busy_s,
    "other_processes_cpu_s": machine_busy_s - sum(cpu.values()) - (k6_cpu or 0),
    "peak_rss_mb_by_process": {n: m.get("VmHWM") for n, m in mem_after.items()},
    "redis": redis,
}
with open(path("report.json"), "w") as f:
    json.dump(report, f, indent=2)


def f(v, fmt="{:.1f}", none="n/a"):
    return none if v is None else fmt.format(v)


lines = [f"== {os.path.basename(OUT)}"]
lines += [f"   {x}" for x in report["run"] if not x.startswith("plugin ")]
lines.append(
    f"k6        {f(k6_out['requests'], '{:.0f}')} requests, {f(k6_out['requests_per_s'])}/s over"
    f" {f(window)} s; p50 {f(k6_out['p50_ms'])} ms, p95 {f(k6_out['p95_ms'])} ms,"
    f" p99 {f(k6_out['p99_ms'])} ms, max {f(k6_out['max_ms'])} ms"
)
lines.append(
    f"errors    http_req_failed {f((k6_out['failed_rate'] or 0) * 100, '{:.2f}')} %,"
    f" checks passed {f((k6_out['checks_rate'] or 0) * 100, '{:.2f}')} %"
)
for h, d in host_out.items():
    lines.append(
        f"{h:<9} chats {dict((k, int(v)) for k, v in d['chats_by_status'].items())};"
        f" CPU {f(d['cpu_s'], '{:.2f}')} s = {f(d['cpu_ms_per_chat'], '{:.3f}')} ms/chat;"
        f" peak RSS {f(d['peak_rss_mb'])} MB (RSS {f(d['rss_before_mb'])} -> {f(d['rss_after_mb'])} MB)"
    )
    lines.append(
        f"          server chat mean {f(d['chat_mean_ms'], '{:.2f}')} ms; host overhead mean"
        f" {f(d['overhead_mean_ms'], '{:.3f}')} ms ({d['overhead_buckets']}); model {int(d['model_calls'])} calls,"
        f" mean {f(d['model_mean_ms'], '{:.2f}')} ms"
    )
    for tool, p in d["plugins"].items():
        lines.append(f"          plugin {tool}: {int(p['calls'])} calls, mean {f(p['mean_ms'], '{:.3f}')} ms")
    if d["fuel_per_chat"]:
        fuel = d["fuel_per_chat"]
        lines.append(
            "          fuel per chat "
            + ", ".join(f"{k} {v:,.0f}" for k, v in fuel.items())
            + f"; all {sum(fuel.values()):,.0f}"
        )
    if d.get("syscalls_per_chat"):
        lines.append(
            "          system calls per chat "
            + ", ".join(f"{k} {v:.2f}" for k, v in d["syscalls_per_chat"].items())
        )
    for op, p in d["session_store"].items():
        lines.append(f"          store {op}: {int(p['calls'])} ops, mean {f(p['mean_ms'], '{:.3f}')} ms")
    if d["session_store_errors"]:
        lines.append(f"          store errors {d['session_store_errors']}")
if len(host_out) > 1:
    a = report["all_hosts"]
    lines.append(
        f"all hosts {int(a['chats_ok'])} chats, CPU {a['cpu_s']:.2f} s = {f(a['cpu_ms_per_chat'], '{:.3f}')} ms/chat"
    )
lines.append(
    "CPU s     "
    + ", ".join(f"{n} {v:.2f}" for n, v in report["cpu_s_by_process"].items())
    + f", others {report['other_processes_cpu_s']:.2f}"
    + f"; machine busy {f((machine_busy or 0) * 100)} % of {os.cpu_count()} cores"
)
lines.append(
    "peak RSS  " + ", ".join(f"{n} {f(v)} MB" for n, v in report["peak_rss_mb_by_process"].items())
)
if redis:
    lines.append(
        f"redis     used {f(redis.get('used_memory_mb'), '{:.2f}')} MB, peak"
        f" {f(redis.get('used_memory_peak_mb'), '{:.2f}')} MB, rss {f(redis.get('used_memory_rss_mb'), '{:.2f}')} MB,"
        f" {redis.get('keys', 'n/a')} keys"
    )
print("\n".join(lines))
