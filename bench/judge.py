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

* Part c (``qed judge bench`` overhead): the bench command (``judge_bench``: data loading,
  checks, verdict files, token metering, metrics, bootstrap, report) against a bare loop of
  the ``LLMJudge.grade`` calls it makes, on the same distinct proofs, alternating (ABBA);
  its own overhead = its wall time minus the time inside ``grade``, over that time.
* Part d (ensemble cost): per proof, grader tokens, requests and wall time of one
  member, of ``JudgeEnsemble`` k = 3 samples of it, and of an ensemble of two different
  members, from the server's usage counts.

Run: ``.venv/bin/python bench/judge.py`` (about two minutes); ``--quick`` for a smoke run;
``--parts c d`` for the bench parts only. Writes ``<out>/judge.md`` and ``<out>/judge.json``
(parts a, b) and ``<out>/judge_bench.md`` and ``<out>/judge_bench.json`` (parts c, d).
See bench/README.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from harness import REPO, command_line, interleaved, loadavg, machine_info, pct, table, write_results

sys.path.insert(0, str(REPO / "src"))

import httpx  # noqa: E402

from qed_lightning.contracts import GradingItem, Problem  # noqa: E402
from qed_lightning.judging import JudgeRequest, LLMJudge, load_template  # noqa: E402
from qed_lightning.judging.openai_client import OpenAICompatibleClient  # noqa: E402
from qed_lightning.judging.bench import JudgeEnsemble  # noqa: E402
from qed_lightning.judging.bench.run import judge_bench  # noqa: E402
from qed_lightning.testing.fault_server_handle import FaultServer  # noqa: E402

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


def judge_machine_info() -> dict:
    return machine_info(httpx=httpx.__version__, loadavg_before=loadavg())


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
        for _, name in interleaved(VARIANTS, math.ceil(n / block)):
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
        for _, c in interleaved(conc, rounds):
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


# --------------------------------------------------------------------- part c


def bench_rows(first: int, n: int, path: Path) -> list[GradingItem]:
    """``n`` distinct human-graded proofs (8 per problem) as a bench JSONL, and the same as items."""
    rows = [{"id": f"b{i}", "problem_id": f"q{i // 8}", "problem": PROBLEM.statement, "rubric": PROBLEM.rubric,
             "proof": proof(i), "human_score": i % 8} for i in range(first, first + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [GradingItem(PROBLEM, r["proof"]) for r in rows]


def bench_overhead(service_time: float, limit: int, n: int, batch: int, rounds: int, tmp: Path) -> dict:
    ids = iter(range(0, 10**9, n))
    out: dict[str, list[dict]] = {"bare": [], "bench": []}
    with FaultServer(idle_timeout_s=120, service_time_s=service_time, max_concurrency=limit) as server:
        judge = LLMJudge(new_client(server.base_url, 64), answer_mode="whole")
        judge.grade(bench_rows(next(ids), 64, tmp / "warm.jsonl"))  # connections and threads up first
        for r, variant in interleaved(("bare", "bench"), 2 * rounds):
            data = tmp / f"{variant}{r}.jsonl"
            items = bench_rows(next(ids), n, data)
            t0 = time.perf_counter()
            if variant == "bare":
                for start in range(0, n, batch):
                    judge.grade(items[start:start + batch])
                out["bare"].append({"wall_s": time.perf_counter() - t0})
            else:
                summary = judge_bench({"j": judge}, str(data), str(tmp / f"out{r}"), batch_size=batch,
                                      plots=False, n_boot=1000)
                wall = time.perf_counter() - t0
                out["bench"].append({"wall_s": wall, "grade_s": summary["timing"]["grade_s"]})
        t0 = time.perf_counter()
        data = tmp / "plots.jsonl"
        bench_rows(next(ids), n, data)
        summary = judge_bench({"j": judge}, str(data), str(tmp / "plots"), batch_size=batch, plots=True)
        plots_wall = time.perf_counter() - t0
        judge.client.close()
    bare = sum(x["wall_s"] for x in out["bare"]) / len(out["bare"])
    wall = sum(x["wall_s"] for x in out["bench"]) / len(out["bench"])
    grade = sum(x["grade_s"] for x in out["bench"]) / len(out["bench"])
    return {"service_time_s": service_time, "server_limit": limit, "proofs": n, "batch_size": batch,
            "rounds": rounds, "runs": out, "bare_wall_s": bare, "bench_wall_s": wall, "bench_grade_s": grade,
            "own_overhead": (wall - grade) / grade, "over_bare_loop": (wall - bare) / bare,
            "own_s_per_proof_ms": (wall - grade) / n * 1e3,
            "with_plots_wall_s": plots_wall, "with_plots_grade_s": summary["timing"]["grade_s"]}


# --------------------------------------------------------------------- part d


def ensemble_cost(service_time: float, limit: int, n: int, tmp: Path) -> dict:
    rows = {}
    with FaultServer(idle_timeout_s=120, service_time_s=service_time, max_concurrency=limit) as server:
        def member(template: str = "rl_strict") -> LLMJudge:
            return LLMJudge(new_client(server.base_url, 64), template=template, answer_mode="whole")

        configs = {"one member": member(),
                   "k=3 samples of it (mean)": JudgeEnsemble([member()], samples=3, combine="mean"),
                   "two members (two clients)": JudgeEnsemble([member(), member()])}
        for i, (name, judge) in enumerate(configs.items()):
            data = tmp / f"ens{i}.jsonl"
            bench_rows(10**6 * (i + 1), n, data)
            server.reset_stats()
            summary = judge_bench({"j": judge}, str(data), str(tmp / f"ens{i}"), batch_size=n, plots=False,
                                  n_boot=200)
            j = summary["judges"]["j"]
            rows[name] = {"tokens_per_proof": j["metrics"]["tokens_mean"], "requests_per_proof":
                          server.stats()["requests"] / n, "wall_s_per_proof": j["wall_s_per_proof"]}
    return {"service_time_s": service_time, "server_limit": limit, "proofs": n, "rows": rows}


def bench_report(res: dict, command: str) -> str:
    m, c, d = res["machine"], res["overhead"], res["ensemble"]
    runs = " / ".join(f"{x['wall_s']:.2f}" for x in c["runs"]["bench"])
    bare = " / ".join(f"{x['wall_s']:.2f}" for x in c["runs"]["bare"])
    out = ["# `qed judge bench`: overhead and ensemble cost (CPU, loopback fault server)", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; load average before "
           f"{m['loadavg_before']}, after {m['loadavg_after']}; {m['date']}; script runtime {res['runtime_s']:.0f} s. "
           "The fault server shares the cores; shared, noisy machine.", f"Command: `{command}`", "",
           "## c. The bench command's own overhead over its grading calls", "",
           f"{c['proofs']} distinct proofs ({c['proofs'] // 8} problems), batch {c['batch_size']}, server service "
           f"time {c['service_time_s'] * 1e3:g} ms, {c['server_limit']} requests at a time, client concurrency 64; "
           f"{2 * c['rounds']} runs of each variant in ABBA order, plots off (n_boot 1000).", "",
           *table(["variant", "mean wall (s)", "runs (s)"],
                  [["bare `LLMJudge.grade` loop", f"{c['bare_wall_s']:.3f}", bare],
                   ["`judge_bench` (whole command)", f"{c['bench_wall_s']:.3f}", runs],
                   ["  of which inside `grade`", f"{c['bench_grade_s']:.3f}", ""]]),
           f"Own overhead (wall - time in grade) / time in grade: **{c['own_overhead']:.2%}** "
           f"({'under' if c['own_overhead'] < 0.02 else 'NOT under'} the 2% goal), "
           f"{c['own_s_per_proof_ms']:.2f} ms per proof; against the bare loop: {c['over_bare_loop']:+.2%}. "
           f"With the PNGs (matplotlib import and two figures) one run took {c['with_plots_wall_s']:.2f} s for "
           f"{c['with_plots_grade_s']:.2f} s of grading "
           f"({(c['with_plots_wall_s'] - c['with_plots_grade_s']) / c['with_plots_grade_s']:.1%} over it): a fixed "
           "cost of about a second, small against a real grader's minutes of grading, large against this toy "
           "server's.", "",
           "## d. Ensemble cost per proof", "",
           f"{d['proofs']} proofs in one batch, service time {d['service_time_s'] * 1e3:g} ms, "
           f"{d['server_limit']} requests at a time. Tokens are the server's usage counts (characters / 4 of the "
           "reply), so they are exact sums here; with a real grader each sample's length varies.", "",
           *table(["judge", "grader tokens / proof", "requests / proof", "wall s / proof"],
                  [[name, f"{r['tokens_per_proof']:.1f}", f"{r['requests_per_proof']:.1f}",
                    f"{r['wall_s_per_proof']:.4f}"] for name, r in d["rows"].items()])]
    rows = list(d["rows"].values())
    out += [f"Reading: k = 3 samples cost {rows[1]['tokens_per_proof'] / rows[0]['tokens_per_proof']:.2f}x the "
            f"tokens and {rows[1]['wall_s_per_proof'] / rows[0]['wall_s_per_proof']:.2f}x the wall time of one "
            f"member (the k copies go out in one batch, but {d['proofs']} x 3 requests queue behind the server's "
            f"{d['server_limit']} at a time; below its limit they would overlap); two members "
            f"cost {rows[2]['tokens_per_proof'] / rows[0]['tokens_per_proof']:.2f}x the tokens and "
            f"{rows[2]['wall_s_per_proof'] / rows[0]['wall_s_per_proof']:.2f}x the wall time (members grade one "
            "after the other).", ""]
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
    p.add_argument("--parts", nargs="+", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d"])
    p.add_argument("--bench-proofs", type=int, default=512, help="part c proofs per run")
    p.add_argument("--bench-rounds", type=int, default=1, help="part c rounds (each runs both variants, ABBA)")
    p.add_argument("--bench-service-time", type=float, default=3.0,
                   help="part c/d server service time (s); with 64 at a time, 47 ms of wall per proof")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.overhead_requests, args.rounds = 0.3, 80, 1
        args.bench_proofs, args.bench_rounds, args.bench_service_time = 64, 1, 0.02
    if args.requests is not None and len(args.requests) not in (1, len(args.concurrency)):
        p.error("--requests takes one value or one per --concurrency setting")
    sizes = {c: math.ceil(args.seconds * min(c, args.server_limit) / args.service_time) for c in args.concurrency}
    if args.requests is not None:
        sizes = dict(zip(args.concurrency, args.requests * len(args.concurrency) if len(args.requests) == 1
                         else args.requests))
    command = command_line("judge", argv)
    if {"a", "b"} & set(args.parts):
        start = time.perf_counter()
        res: dict = {"machine": judge_machine_info(), "overhead": []}
        slow_n = max(20, args.overhead_requests // 8)  # each one costs the service time in wall time
        for service, n in ((0.0, args.overhead_requests), (args.overhead_service_time, slow_n)):
            print(f"part a: service time {service:g} s, {n} requests per variant", flush=True)
            res["overhead"].append(overhead(service, n, max(1, min(20, n // 10))))
        print(f"part b: items per concurrency {sizes}", flush=True)
        res["throughput"] = throughput(args.service_time, args.server_limit, args.concurrency, sizes, args.rounds)
        res["machine"]["loadavg_after"] = loadavg()
        res["runtime_s"] = time.perf_counter() - start
        text = report(res, command)
        write_results(args.out, "judge", text, res)
        print(text)
    if {"c", "d"} & set(args.parts):
        import tempfile

        start = time.perf_counter()
        res = {"machine": judge_machine_info()}
        with tempfile.TemporaryDirectory() as tmp:
            print(f"part c: {args.bench_proofs} proofs, {args.bench_rounds} ABBA rounds", flush=True)
            res["overhead"] = bench_overhead(args.bench_service_time, 64, args.bench_proofs, 64, args.bench_rounds,
                                             Path(tmp))
            print("part d: ensemble cost", flush=True)
            res["ensemble"] = ensemble_cost(args.bench_service_time, 64, 64, Path(tmp))
        res["machine"]["loadavg_after"] = loadavg()
        res["runtime_s"] = time.perf_counter() - start
        text = bench_report(res, command)
        write_results(args.out, "judge_bench", text, res)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
