"""Splits the host's CPU samples by component, from a `PERF=dwarf` run:

    perf script -i <run>/perf.data -F comm,tid,ip,sym,dso > samples.txt
    python3 loadtest/lib/perf_breakdown.py samples.txt

Each sample goes to the innermost frame that is a function of an
`agent_host::<module>` (so model-client work done for the agent loop counts as
`llm`); a host path that only appears as a type parameter (the runtime's
`block_on<agent_host::main::...>`, a connection task generic over
`agent_host::outbound::ConnectWithin`) does not count, and `main` never does.
Samples with no host frame are classified by library. Call graphs unwound with DWARF are
sometimes cut short, which shows up as "unattributed"."""

import re
import sys
from collections import Counter

# A frame's own path: `agent_host::m::f`, `<agent_host::m::T as Trait>::f`
# or `<T as agent_host::m::Trait>::f`, not a host type among its parameters.
HOST = re.compile(r"^<?agent_host::(\w+)|^<[^<>]* as agent_host::(\w+)")
JIT = re.compile(r"/perf-\d+\.map$")


def classify(frames):
    syms = [s for s, _ in frames]
    joined = "\n".join(syms)
    if frames and (JIT.search(frames[0][1]) or "[JIT]" in frames[0][1]):
        return "plugins: guest code (JIT)"
    module = None
    for s in syms:  # innermost first
        m = HOST.search(s)
        if m and (m.group(1) or m.group(2)) != "main":
            module = m.group(1) or m.group(2)
            break
    if "wasmtime" in joined and module in (None, "plugins", "agent"):
        if "drop_in_place<wasmtime::runtime::store::StoreInner" in joined:
            return "plugins: store drop (pool decommit, madvise)"
        if "instantiate" in joined:
            return "plugins: instantiate"
        return "plugins: call, host functions, glue"
    if module:
        return {
            "plugins": "plugins: call, host functions, glue",
            "llm": "model client (request build, JSON, HTTP)",
            "backend": "backend client",
            "outbound": "outbound HTTP connection tasks",
            "sessions": "session store (Redis)",
            "ratelimit": "rate limit",
            "identity": "identity (JWT, /auth/me cache)",
            "agent": "agent loop",
            "http": "chat handler (body, response JSON)",
            "telemetry": "metrics",
        }.get(module, f"host: {module}")
    if re.search(r"redis::|deadpool", joined):
        return "session store (Redis)"
    if re.search(r"hyper_util::client|reqwest|hyper::client", joined):
        return "outbound HTTP connection tasks"
    if re.search(r"hyper::proto|hyper::server|axum|tower|hyper_util::server", joined):
        return "inbound HTTP (hyper/axum/tower)"
    if "tokio" in joined:
        return "tokio runtime (scheduler, timers, I/O driver)"
    if all(d == "[kernel.kallsyms]" for _, d in frames):
        return "kernel only"
    return "unattributed"


def samples(lines):
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if not line.startswith("\t") and not line.startswith(" "):
            continue  # the sample header: comm and tid
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
        if m:
            frames.append((m.group(1), m.group(2)))
    if frames:
        yield frames


def main():
    counts = Counter()
    with open(sys.argv[1], errors="replace") as f:
        for frames in samples(f):
            counts[classify(frames)] += 1
    total = sum(counts.values())
    plugins = sum(v for k, v in counts.items() if k.startswith("plugins"))
    for k, v in counts.most_common():
        print(f"{v / total * 100:6.1f} %  {k}")
    print(f"{plugins / total * 100:6.1f} %  (all plugin work)")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
