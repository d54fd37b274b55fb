"""`make bench`: run every benchmark once, side by side, and write bench/results/*.json and the
table in bench/README.md."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from bench import cr, drain, queue_policy, scaling, sdk, workflow
from bench import server as server_bench
from bench.common import REDIS_URL
from tests.support import RedisServer

HERE = Path(__file__).resolve().parent
N_SDK = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
N_CR = int(sys.argv[2]) if len(sys.argv) > 2 else 500
N_DRAIN, N_DRAIN_IO = 20_000, 5_000


SECTIONS = ("drain", "sdk", "cr", "workflow", "scaling", "server", "queue_policy")


def main() -> None:
    """Every section, or only those in BENCH_ONLY (comma-separated, e.g. `BENCH_ONLY=drain
    make bench`): those replace their figures in latest.json, each stamped with its own time."""
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    if unknown := only - set(SECTIONS):
        raise SystemExit(f"BENCH_ONLY: no section {sorted(unknown)}; sections: {SECTIONS}")
    latest = HERE / "results" / "latest.json"
    results: dict[str, Any] = json.loads(latest.read_text()) if only and latest.exists() else {}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    stamps = results.setdefault("sections_when", {})
    if not only:
        results["when"] = now
        stamps.clear()

    def want(section: str) -> bool:
        if only and section not in only:
            return False
        stamps[section] = now
        return True

    work = Path(tempfile.mkdtemp(prefix="taskorch-bench-"))
    # The peers' apps read BENCH_REDIS_URL when imported; serve exactly that address.
    server = RedisServer(work / "redis", port=int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    server.start()
    try:
        systems = sdk.systems()
        if want("drain"):
            results["drain"] = drains(systems, server, work)
            save(results)  # a later section's failure must not lose half an hour of drains
            server.restart()
        if want("sdk"):
            rows = []
            for name, module in systems:
                print(f"sdk end to end: {name} ...", flush=True)
                rows.append(sdk.run_system(name, module, server.url, N_SDK, work))
            best_peer = max(r["tasks_per_s"] for r in rows if r["system"] != "taskorch")
            for r in rows:
                r["ratio_vs_fastest_peer"] = round(r["tasks_per_s"] / best_peer, 2)
            results["sdk_end_to_end"] = rows
            print("sdk: batched enqueue ...", flush=True)
            results["taskorch_batched_enqueue"] = sdk.taskorch_batched_enqueue(server.url, 100_000)
            print("sdk: idle pickup latency ...", flush=True)
            results["taskorch_idle_pickup_latency"] = sdk.taskorch_idle_latency(
                server.url, 200, work
            )
            server.restart()
        if want("cr"):
            print("cr: Task CRs ...", flush=True)
            results["cr_path"] = cr.run(server.url, N_CR, work)
            server.restart()
        if want("workflow"):
            print("workflow: pipeline and fan-out ...", flush=True)
            results["workflow"] = workflow.run(server.url, work)
            server.restart()
        if want("scaling"):
            print("scaling: WorkerPool reaction and scale-down soak ...", flush=True)
            results["scaling"] = scaling.run(server.url, work)
            server.restart()
        if want("server"):
            print("server: HTTP submit vs SDK, dashboard pages with 100,000 queued ...", flush=True)
            results["server"] = server_bench.run(server.url)
            server.restart()
        if want("queue_policy"):
            print("queue policy: concurrency keys vs plain, rate limit ...", flush=True)
            results["queue_policy"] = {
                "concurrency_keys": queue_policy.keys_vs_plain(server.url, work),
                "rate_limit": queue_policy.rate_limit_accuracy(server.url, work),
            }
    finally:
        server.stop()
    save(results)
    table = render(results)
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- results -->", "<!-- /results -->"
    readme.write_text(
        text[: text.index(start) + len(start)] + "\n" + table + text[text.index(end) :]
    )
    print(table)


def save(results: dict[str, Any]) -> None:
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2) + "\n")


def drains(
    systems: list[tuple[str, ModuleType]], server: RedisServer, work: Path
) -> dict[str, list[dict[str, Any]]]:
    """The workers alone (bench/drain.py), 3 times each: no-op under appendfsync always (every
    system), 10 ms I/O (every system), and no-op without persistence (taskorch and the three
    fastest peers of the first figure, to keep `make bench` within half an hour)."""
    url = server.url
    out: dict[str, list[dict[str, Any]]] = {}
    for mode, io, n in (
        ("noop_fsync_always", False, N_DRAIN),
        ("io_10ms_fsync_always", True, N_DRAIN_IO),
    ):
        print(f"drain ({mode}), every system once per round:", flush=True)
        out[mode] = drain.drain_rounds(systems, url, n, io, work)
    fastest = sorted(
        (r for r in out["noop_fsync_always"] if r["system"] != "taskorch"),
        key=lambda r: -r["tasks_per_s"]["median"],
    )[:3]
    chosen = {"taskorch", *(r["system"] for r in fastest)}
    # Off until the caller restarts the server (its flags turn AOF back on). Not CONFIG SET
    # appendonly yes: Redis refuses to shut down while it writes the initial AOF that starts.
    redis.Redis.from_url(url).config_set("appendonly", "no")
    print("drain (no persistence), every chosen system once per round:", flush=True)
    out["noop_no_persistence"] = drain.drain_rounds(
        [(name, module) for name, module in systems if name in chosen], url, N_DRAIN, False, work
    )
    for rows in out.values():
        best = max(x["tasks_per_s"]["median"] for x in rows if x["system"] != "taskorch")
        for x in rows:
            x["ratio_vs_fastest_peer"] = round(x["tasks_per_s"]["median"] / best, 2)
    return out


def render_drains(d: dict[str, list[dict[str, Any]]]) -> list[str]:
    titles = {
        "noop_fsync_always": f"Drain, {N_DRAIN} no-op tasks pre-enqueued, appendfsync always",
        "io_10ms_fsync_always": f"Drain, {N_DRAIN_IO} tasks of 10 ms I/O pre-enqueued, appendfsync always",
        "noop_no_persistence": f"Drain, {N_DRAIN} no-op tasks pre-enqueued, no persistence (the 3 fastest peers)",
    }
    lines: list[str] = []
    for mode, rows in d.items():
        lines += [
            "",
            f"{titles[mode]}; 2 worker processes, rate from 1 % to 100 % done, 3 runs:",
            "",
            "| system | config | tasks/s median (min–max) | × fastest peer | Redis CPU µs/task | worker CPU µs/task |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for x in sorted(rows, key=lambda x: -x["tasks_per_s"]["median"]):
            t = x["tasks_per_s"]
            lines.append(
                f"| {x['system']} | {x['config']} | {t['median']} ({t['min']}–{t['max']}) "
                f"| {x['ratio_vs_fastest_peer']} | {x['redis_cpu_us_per_task']} | {x['worker_cpu_us_per_task']} |"
            )
    return lines


def render(r: dict[str, Any]) -> str:
    lines = [
        f"Run {r['when']} on {r['machine']}."
        + "".join(
            f" Rerun alone: {k} at {v}."
            for k, v in sorted(r.get("sections_when", {}).items())
            if v != r["when"]
        ),
        *render_drains(r["drain"]),
        "",
        f"End to end (enqueue through each system's usual API while its 2 workers run, one run), {N_SDK} no-op tasks:",
        "",
        "| system | config | enqueue s | end-to-end s | tasks/s | × fastest peer |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in r["sdk_end_to_end"]:
        lines.append(
            f"| {row['system']} | {row['config']} | {row['enqueue_s']} | {row['end_to_end_s']} "
            f"| {row['tasks_per_s']} | {row['ratio_vs_fastest_peer']} |"
        )
    e, lat, c = r["taskorch_batched_enqueue"], r["taskorch_idle_pickup_latency"], r["cr_path"]
    lines += [
        "",
        f"- taskorch batched enqueue from one process: **{e['tasks_per_s']} tasks/s** ({e['tasks']} tasks)",
        f"- taskorch idle pickup latency (enqueue → handler start): p50 **{lat['p50_ms']} ms**, "
        f"p99 {lat['p99_ms']} ms ({lat['samples']} samples)",
        f"- CR path, {c['tasks']} Task CRs created by {c['client_threads']} client threads: all Succeeded in "
        f"{c['all_succeeded_s']} s (**{c['tasks_per_s']} tasks/s**, **{c['vs_bare_creates']}×** the "
        f"{c['bare_creates_per_s']} bare creates/s of this API server), "
        f"create→Succeeded p50 {c['create_to_succeeded_p50_s']} s, "
        f"p99 {c['create_to_succeeded_p99_s']} s, **{c['status_writes_per_task']} status writes/task**, "
        f"operator CPU {c['operator_cpu_us_per_task']} µs/task, control plane CPU "
        f"{c['control_plane_cpu_us_per_task']['total']} µs/task "
        f"({c['control_plane_cpu_us_per_bare_create']['total']} µs per bare create); "
        f"control plane started in {c['control_plane_start_s']} s",
    ]
    for key, how in (
        ("jobs_default_qps", "kube-controller-manager as shipped (client 20 QPS)"),
        ("jobs_lifted_qps", "controller manager and scheduler at 5000 QPS"),
    ):
        if key in c:
            j = c[key]
            lines.append(
                f"- CR path peer, {j['jobs']} Jobs (one trivial container, kwok completes pods at "
                f"once), {how}: all Complete in {j['all_complete_s']} s (**{j['jobs_per_s']} "
                f"Jobs/s**; Tasks/s are **{c['tasks_vs_' + key]}×** that), control plane CPU "
                f"{j['control_plane_cpu_us_per_job']['total']} µs/Job"
            )
    if "workflow" in r:
        w = r["workflow"]
        lines += [
            f"- Workflow, the seed's 3-step pipeline (kubectl-apply → Succeeded, {w['pipeline_runs']} runs): "
            f"p50 **{w['pipeline_p50_s']} s**, p99 {w['pipeline_p99_s']} s",
            f"- Workflow fan-out of {w['fan_out_items']} no-op items: **{w['fan_out_s']} s** vs "
            f"{w['sdk_same_tasks_s']} s for the same tasks through the SDK (**{w['fan_out_vs_sdk']}×**), "
            f"{w['fan_out_status_writes']} status writes, final status {w['fan_out_status_bytes']} bytes",
        ]
    if "queue_policy" in r:
        k, rl = r["queue_policy"]["concurrency_keys"], r["queue_policy"]["rate_limit"]
        lines += [
            f"- Drain with concurrency keys ({k['tasks']} tasks over {k['keys']} keys, maxConcurrent 1) "
            f"vs plain tasks, 2 workers × 16: **{k['keyed_vs_plain']}×** (range {k['keyed_vs_plain_range']}; "
            f"keyed {k['keyed_tasks_per_s']} tasks/s, plain {k['plain_tasks_per_s']} tasks/s)",
            f"- Rate limit {rl['limit_per_s']}/s, 2 workers: measured/limit over 10 s "
            f"**{rl['measured_vs_limit']}**",
        ]
    if "server" in r:
        v = r["server"]
        for mode, label in (("single", "one task a request"), ("batch", "1,000 tasks a request")):
            f = v[f"submit_{mode}"]
            lines.append(
                f"- HTTP submit, {label} ({f['tasks']} tasks, {f['concurrency']} connection(s)): "
                f"**{f['http_tasks_per_s']['median']} tasks/s** "
                f"({f['http_tasks_per_s']['min']}–{f['http_tasks_per_s']['max']}) vs the SDK's "
                f"{f['sdk_tasks_per_s']['median']} the same way: **{f['http_vs_sdk']}×**"
            )
        pages = ", ".join(
            f"{name} p50 {t['p50_ms']} ms / p95 **{t['p95_ms']} ms**"
            for name, t in v["dashboard_100k_queued"].items()
        )
        lines.append(f"- Dashboard with 100,000 tasks queued (200 requests each): {pages}")
    if "scaling" in r:
        s = r["scaling"]
        lines += [
            f"- WorkerPool: burst on a pool at 0 → first scale-up **{s['burst_to_first_scale_up_s']} s** "
            f"(poll {s['poll_interval_s']} s); drained → 0 replicas {s['drained_to_zero_s']} s "
            f"(cooldown {s['cooldown_s']} s); soak of {s['soak_tasks']} tasks: {s['soak_scale_downs']} "
            f"scale-downs, {s['pods_removed']} pods removed, **{s['busy_pods_removed']} busy pods removed**, "
            f"**{s['tasks_run_more_than_once']} tasks re-run**",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
