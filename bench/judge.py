"""LLM-judge client benchmark against the fault server (CPU, loopback, no model).

The grader is ``fault_server.py`` in its own process, answering every request after a
fixed service time, so what is measured is the judge stack around the model:

* Part a (client overhead, concurrency 1): per-request wall time of four ways to make
  the same call, one request at a time: ``judge`` (``LLMJudge.grade`` of one item: answer
  extraction, template render with a fresh fence, HTTP, verdict parsing), ``client``
  (``OpenAICompatibleClient.complete`` of one prompt), ``httpx`` (a bare
  ``httpx.Client.post`` of the same JSON body) and ``stdlib`` (a bare keep-alive
  ``http.client`` loop: the floor, which includes the server's own work). Variants run in
  interleaved blocks (ABCD DCBA ...) so they share the background load; once with
  service time 0 and once with a fixed one (overhead = latency - service time). CPU time
  per request of this process (all threads) and of the server process are reported too:
  on 2 cores, client and server compete for the same CPUs.
* Part b (throughput): ``LLMJudge.grade`` of a batch of distinct proofs (nothing cached)
  with client ``max_concurrency`` 1, 8, 64 against a server that serves ``--server-limit``
  requests at a time (more queue) with a fixed service time: items/s, speedup over
  concurrency 1, the ideal min(c, limit)/service time, verdict latency p50/p95 and the
  server's peak of requests in flight. Settings run in ABC CBA order over ``--rounds``.

Run: ``.venv/bin/python bench/judge.py`` (about a minute); ``--quick`` for a smoke run.
Writes ``<out>/judge.md`` and ``<out>/judge.json``. See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import httpx  # noqa: E402

from qed_lightning.contracts import GradingItem, Problem  # noqa: E402
from qed_lightning.judging import JudgeRequest, LLMJudge, load_template  # noqa: E402
from qed_lightning.judging.fault_server_handle import FaultServer  # noqa: E402
from qed_lightning.judging.openai_client import OpenAICompatibleClient  # noqa: E402

MODEL = "bench-judge"
PROBLEM = Problem("bench-even-sum", "Prove that the sum of two even integers is even.",
                  rubric="7 points for a complete proof; 2 points for writing both numbers as 2k.")
VARIANTS = ("judge", "client", "httpx", "stdlib")


def proof(i: int) -> str:
    # ~2 KB, a short olympiad answer; the index makes every proof distinct.
    steps = "".join(f"Step {k}: since a = 2m and b = 2n, a + b = 2(m + n), an even number. " for k in range(25))
    return f"Proof #{i}. {steps}Hence the sum of two even integers is even."


PROMPT = load_template("rl_strict").render(PROBLEM, proof(0), "0123456789abcdef")
# The client's chat body (openai_client._request), so the bare loops send the same bytes.
BODY = {"model": MODEL, "temperature": 1.0, "messages": [{"role": "user", "content": PROMPT}],
        "max_completion_tokens": 8192}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def machine_info() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "httpx": httpx.__version__,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def server_cpu_s(server: FaultServer) -> float:
    """The server process's user+system CPU seconds (10 ms ticks: read over many requests)."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_client(base_url: str, concurrency: int) -> OpenAICompatibleClient:
    # No retries: a fault here is a benchmark bug, and a retry would hide in the timings.
    return OpenAICompatibleClient(base_url, MODEL, max_concurrency=concurrency, max_attempts=1, timeout_s=60)


def stdlib_caller(base_url: str):
    """The floor: one keep-alive http.client connection, body and headers sent in one write."""
    split = urlsplit(f"{base_url}/chat/completions")
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
    data, headers = json.dumps(BODY).encode(), {"Content-Type": "application/json"}

    def call() -> str:
        conn.request("POST", split.path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        assert resp.status == 200, payload[:200]
        return json.loads(payload)["choices"][0]["message"]["content"]
    return call, conn


# --------------------------------------------------------------------- part a


def make_variants(base_url: str) -> tuple[dict, list]:
    """A one-request callable per variant, all sending the same prompt; and what to close."""
    judge, client = LLMJudge(new_client(base_url, 1), answer_mode="whole"), new_client(base_url, 1)
    item = GradingItem(PROBLEM, proof(0))
    url, bare = f"{base_url}/chat/completions", httpx.Client(timeout=60)  # httpx defaults, as the client's

    def run_judge() -> str:
        verdict = judge.grade([item])[0]
        assert verdict.score == 7, verdict
        return verdict.raw

    def run_client() -> str:
        reply = client.complete([JudgeRequest(PROMPT)])[0]
        assert reply.error is None, reply.error
        return reply.text

    def run_httpx() -> str:
        resp = bare.post(url, json=BODY)
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"]

    run_stdlib, conn = stdlib_caller(base_url)
    fns = {"judge": run_judge, "client": run_client, "httpx": run_httpx, "stdlib": run_stdlib}
    return fns, [judge.client, client, bare, conn]


def overhead(service_time: float, n: int, block: int) -> dict:
    with FaultServer(idle_timeout_s=60, service_time_s=service_time) as server:
        fns, closers = make_variants(server.base_url)
        for fn in fns.values():  # connect, start the pool thread, warm caches
            for _ in range(10):
                fn()
        lat: dict[str, list[float]] = {name: [] for name in VARIANTS}
        cpu, scpu = dict.fromkeys(VARIANTS, 0.0), dict.fromkeys(VARIANTS, 0.0)
        for r in range(math.ceil(n / block)):
            for name in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                fn, c0, s0 = fns[name], time.process_time(), server_cpu_s(server)
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    lat[name].append(time.perf_counter() - t0)
                cpu[name] += time.process_time() - c0
                scpu[name] += server_cpu_s(server) - s0
        for obj in closers:
            obj.close()
    med = {name: pct(lat[name], 0.5) for name in VARIANTS}
    rows = {name: {"n": len(lat[name]), "median_ms": med[name] * 1e3, "p95_ms": pct(lat[name], 0.95) * 1e3,
                   "over_service_ms": (med[name] - service_time) * 1e3,
                   "over_stdlib_ms": (med[name] - med["stdlib"]) * 1e3,
                   "over_httpx_ms": (med[name] - med["httpx"]) * 1e3,
                   "client_cpu_ms": cpu[name] / len(lat[name]) * 1e3,
                   "server_cpu_ms": scpu[name] / len(lat[name]) * 1e3} for name in VARIANTS}
    return {"service_time_s": service_time, "block": block, "variants": rows}


# --------------------------------------------------------------------- part b


def throughput(service_time: float, limit: int, conc: list[int], sizes: dict, rounds: int) -> dict:
    runs: dict[int, list[dict]] = {c: [] for c in conc}
    ids = iter(range(1, 10**9))
    with FaultServer(idle_timeout_s=60, service_time_s=service_time, max_concurrency=limit) as server:
        judges = {c: LLMJudge(new_client(server.base_url, c), answer_mode="whole") for c in conc}
        for c in conc:  # open the connections and start the threads before timing
            judges[c].grade([GradingItem(PROBLEM, proof(next(ids))) for _ in range(c)])
        for r in range(rounds):
            for c in conc if r % 2 == 0 else conc[::-1]:
                items = [GradingItem(PROBLEM, proof(next(ids))) for _ in range(max(1, sizes[c] // rounds))]
                server.reset_stats()
                c0, s0, t0 = time.process_time(), server_cpu_s(server), time.perf_counter()
                verdicts = judges[c].grade(items)
                wall, cpu, scpu = time.perf_counter() - t0, time.process_time() - c0, server_cpu_s(server) - s0
                stats = server.stats()
                runs[c].append({"n": len(items), "wall_s": wall, "cpu_s": cpu, "server_cpu_s": scpu,
                                "errors": sum(not v.ok for v in verdicts), "latencies": [v.latency_s for v in verdicts],
                                "server_requests": stats["requests"], "peak_in_flight": stats["peak_in_flight"]})
        for judge in judges.values():
            judge.client.close()
    rows = {}
    for c, rs in runs.items():
        n, wall, lat = sum(x["n"] for x in rs), sum(x["wall_s"] for x in rs), [t for x in rs for t in x["latencies"]]
        rows[c] = {"items": n, "wall_s": wall, "items_per_s": n / wall, "ideal_per_s": min(c, limit) / service_time,
                   "per_round_items_per_s": [x["n"] / x["wall_s"] for x in rs],
                   "p50_ms": pct(lat, 0.5) * 1e3, "p95_ms": pct(lat, 0.95) * 1e3,
                   "errors": sum(x["errors"] for x in rs), "server_requests": sum(x["server_requests"] for x in rs),
                   "peak_in_flight": max(x["peak_in_flight"] for x in rs),
                   "client_cpu_ms_per_item": sum(x["cpu_s"] for x in rs) / n * 1e3,
                   "server_cpu_ms_per_item": sum(x["server_cpu_s"] for x in rs) / n * 1e3}
    for row in rows.values():
        row["speedup"] = row["items_per_s"] / rows[conc[0]]["items_per_s"]
        row["of_ideal"] = row["items_per_s"] / row["ideal_per_s"]
    return {"service_time_s": service_time, "server_limit": limit, "rounds": rounds, "rows": rows}


# --------------------------------------------------------------------- report


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows), ""]


def report(res: dict, command: str) -> str:
    m, b, (fast, slow) = res["machine"], res["throughput"], res["overhead"]
    out = ["# LLM-judge client benchmark (CPU, loopback fault server)", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, httpx {m['httpx']}; load average "
           f"before {m['loadavg_before']}, after {m['loadavg_after']}; {m['date']}; script runtime "
           f"{res['runtime_s']:.0f} s. The fault server runs in its own process on the same cores, so every wall "
           "time includes its work. Shared, noisy machine: read the differences between variants measured side "
           "by side.", f"Command: `{command}`", "", "## a. Client overhead at concurrency 1", "",
           "One request at a time, variants interleaved in blocks. `judge` = `LLMJudge.grade([item])` (full "
           "path); `client` = `OpenAICompatibleClient.complete([request])`; `httpx` = bare `httpx.Client.post`, "
           "same body; `stdlib` = bare keep-alive `http.client` (the floor). CPU columns: CPU time per request "
           "of this process (all threads) and of the server process (10 ms ticks: rough).", ""]
    for part in res["overhead"]:
        out += [f"Service time {part['service_time_s'] * 1e3:g} ms, {part['variants']['judge']['n']} requests "
                "per variant:", ""]
        out += table(["variant", "median (ms)", "p95 (ms)", "median - service (ms)", "over stdlib (ms)",
                      "over httpx (ms)", "client CPU (ms/req)", "server CPU (ms/req)"],
                     [[k] + [f"{v[f]:.2f}" for f in ("median_ms", "p95_ms", "over_service_ms", "over_stdlib_ms",
                                                     "over_httpx_ms", "client_cpu_ms", "server_cpu_ms")]
                      for k, v in part["variants"].items()])
    worst = {k: max(p["variants"][k]["over_stdlib_ms"] for p in res["overhead"]) for k in VARIANTS}
    crude, sv = slow["variants"]["judge"]["over_service_ms"], slow["variants"]
    cpu_ratio = sv["judge"]["client_cpu_ms"] / fast["variants"]["judge"]["client_cpu_ms"]
    out += [f"Reading: over the stdlib floor the full judge path adds at most {worst['judge']:.2f} ms per request "
            f"({'under' if worst['judge'] < 2 else 'NOT under'} the 2 ms target); the client alone "
            f"{worst['client']:.2f} ms, of which bare httpx {worst['httpx']:.2f} ms. Counted crudely as latency "
            f"minus the {slow['service_time_s'] * 1e3:g} ms service time it is {crude:.2f} ms "
            f"({'under' if crude < 2 else 'over'} 2 ms), {sv['stdlib']['over_service_ms']:.2f} ms of it the floor "
            "(loopback, the server's parsing and sleep wake-up). With a service time each request starts from "
            f"idle threads and cold caches: the judge's client CPU per request is {cpu_ratio:.1f}x the "
            "back-to-back figure at service time 0.",
            "", "## b. Throughput (LLMJudge.grade, distinct proofs, no cache)", "",
            f"Server: service time {b['service_time_s'] * 1e3:g} ms, serves {b['server_limit']} requests at a time "
            f"(the rest queue in it). {b['rounds']} rounds, settings in ABC CBA order. Ideal = min(c, "
            f"{b['server_limit']}) / service time. Latency is the verdict's `latency_s` (request sent to reply "
            "read, queueing in the server included). Peak in flight counts requests inside the server, queued "
            "ones too.", ""]
    out += table(["client max_concurrency", "items", "items/s", "speedup vs c=1", "ideal items/s", "of ideal",
                  "p50 (ms)", "p95 (ms)", "server peak in flight", "client CPU (ms/item)", "server CPU (ms/item)",
                  "errors"],
                 [[c, r["items"], f"{r['items_per_s']:.1f}", f"{r['speedup']:.2f}", f"{r['ideal_per_s']:.0f}",
                   f"{r['of_ideal']:.0%}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", r["peak_in_flight"],
                   f"{r['client_cpu_ms_per_item']:.2f}", f"{r['server_cpu_ms_per_item']:.2f}", r["errors"]]
                  for c, r in b["rows"].items()])
    rows = list(b["rows"].values())
    rates = " -> ".join(f"{r['items_per_s']:.0f}" for r in rows)
    speedups = " / ".join(f"{r['speedup']:.1f}x" for r in rows)
    shares = " / ".join(f"{r['of_ideal']:.0%}" for r in rows)
    out += [f"Reading: throughput goes {rates} items/s (speedup {speedups}), {shares} of ideal: "
            + ("it scales up to the server's limit (>= 80% of ideal at every setting)."
               if all(r["of_ideal"] >= 0.8 for r in rows) else "it does NOT reach 80% of the ideal at every "
               "setting (see the CPU columns: client and server share the machine's cores).")
            + " Past the limit, requests queue in the server: latency p50 is about two service times.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64], help="client max_concurrency settings")
    p.add_argument("--requests", type=int, nargs="+", default=None,
                   help="part b items per setting (one value, or one per --concurrency); default: --seconds' worth")
    p.add_argument("--seconds", type=float, default=3.0, help="part b: ideal seconds per setting, for the default sizes")
    p.add_argument("--service-time", type=float, default=0.05, help="part b server service time (s)")
    p.add_argument("--server-limit", type=int, default=32, help="part b server max_concurrency")
    p.add_argument("--rounds", type=int, default=2, help="part b rounds (alternating order)")
    p.add_argument("--overhead-requests", type=int, default=1600, help="part a requests per variant at service 0 "
                   "(an eighth of it with --overhead-service-time)")
    p.add_argument("--overhead-service-time", type=float, default=0.02, help="part a second server's service time (s)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.overhead_requests, args.rounds = 0.3, 80, 1
    if args.requests is not None and len(args.requests) not in (1, len(args.concurrency)):
        p.error("--requests takes one value or one per --concurrency setting")
    sizes = {c: math.ceil(args.seconds * min(c, args.server_limit) / args.service_time) for c in args.concurrency}
    if args.requests is not None:
        sizes = dict(zip(args.concurrency, args.requests * len(args.concurrency) if len(args.requests) == 1
                         else args.requests))
    start = time.perf_counter()
    res: dict = {"machine": machine_info(), "overhead": []}
    slow_n = max(20, args.overhead_requests // 8)  # each one costs the service time in wall time
    for service, n in ((0.0, args.overhead_requests), (args.overhead_service_time, slow_n)):
        print(f"part a: service time {service:g} s, {n} requests per variant", flush=True)
        res["overhead"].append(overhead(service, n, max(1, min(20, n // 10))))
    print(f"part b: items per concurrency {sizes}", flush=True)
    res["throughput"] = throughput(args.service_time, args.server_limit, args.concurrency, sizes, args.rounds)
    res["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["runtime_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(res, " ".join(["python bench/judge.py", *(sys.argv[1:] if argv is None else argv)]))
    (args.out / "judge.md").write_text(text)
    (args.out / "judge.json").write_text(json.dumps(res, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
