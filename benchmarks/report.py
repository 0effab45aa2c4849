"""Turn measured results into the Markdown report (and its raw JSON).

The headline table has one column per system and a pgjobs/peer ratio column
per peer. For jobs/s a ratio above 1 means pgjobs is faster; for latency a
ratio below 1 means pgjobs is faster. Below it: the setting each headline
figure came from, and every individual run, so nothing is hidden behind "best".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from harness import PG, REPO_DIR

REDIS_PEERS = ("rq", "celery")  # compared with pgjobs-redis, not with pgjobs on the database


def environment(quick: bool, counts: dict, total_s: float, database=None) -> dict:
    try:
        import psycopg

        with psycopg.connect(dbname="postgres", **PG) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as e:  # the report is still useful without it
        pg = f"? ({e})"
    try:
        db = database.version() if database else f"PostgreSQL {pg}"
    except Exception as e:
        db = f"{database.vendor} ? ({e})"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "mode": "quick" if quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg,
        "database": db,
        "counts": counts,
        "total_s": round(total_s),
    }


def _fmt_rate(v):
    return f"{v:,.0f}" if v is not None else "–"


def _fmt_ms(v):
    if v is None:
        return "–"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def _fmt_busy(v):
    return "–" if v is None or v != v else f"{v:.0%}"


def _fmt_others(r):
    """Others' CPU share, naming the busiest other process when it matters."""
    share = r.get("others_during")
    text = _fmt_busy(share)
    top = r.get("top_others") or []
    if share is not None and share > 0.05 and top:
        text += f" (`{top[0][0].strip()[:40]}`)"
    return text


def _fmt_attempts(r):
    runs = r.get("attempts") or []
    if len(runs) < 2:
        return ""
    return ", ".join(f"{rate:,.0f} @ {others:.0%}" for rate, others in runs)


def _busiest(results: dict) -> float:
    """Highest machine CPU use seen just before any measurement started."""
    seen = [0.0]
    for res in results.values():
        runs = [
            *res.get("throughput", []),
            *res.get("latency", []),
            *res.get("enqueue", {}).values(),
        ]
        for r in runs:
            for key in ("busy_before", "others_during"):
                v = r.get(key)
                if v is not None and v == v:  # skip None and NaN
                    seen.append(v)
    return max(seen)


def _figures(res: dict) -> dict:
    """The headline numbers of one system (None where not measured)."""
    enq = res.get("enqueue", {})
    best = res.get("best", {})
    lat = res.get("best_latency") or {}
    return {
        "enqueue_single": enq.get("single", {}).get("rate"),
        "enqueue_atomic": enq.get("atomic", {}).get("rate"),
        "enqueue_bulk": enq.get("bulk", {}).get("rate"),
        "process_1": (best.get(1) or {}).get("rate"),
        "process_2": (best.get(2) or {}).get("rate"),
        "latency_p50": lat.get("p50_ms"),
        "latency_p95": lat.get("p95_ms"),
    }


def markdown(results: dict, skipped: dict, meta: dict) -> str:
    c = meta["counts"]
    rows = [
        ("enqueue_single", "enqueue, one transaction per job (jobs/s)", _fmt_rate),
        (
            "enqueue_atomic",
            f"enqueue, {c['enqueue_n']:,} jobs in one transaction (jobs/s)",
            _fmt_rate,
        ),
        ("enqueue_bulk", f"enqueue, bulk API, {c['enqueue_n']:,} jobs (jobs/s)", _fmt_rate),
        ("process_1", f"process {c['jobs']:,} no-op jobs, 1 worker process (jobs/s)", _fmt_rate),
        ("process_2", f"process {c['jobs']:,} no-op jobs, 2 worker processes (jobs/s)", _fmt_rate),
        ("latency_p50", "enqueue→start latency p50, idle worker (ms)", _fmt_ms),
        ("latency_p95", "enqueue→start latency p95, idle worker (ms)", _fmt_ms),
    ]
    names = list(results)
    figs = {n: _figures(results[n]) for n in names}
    # pgjobs against the database queues; pgjobs on Redis against the Redis queues.
    ratios = [
        (ours, peer)
        for ours in ("pgjobs", "pgjobs-redis")
        if ours in results
        for peer in names
        if peer not in ("pgjobs", "pgjobs-redis")
        and (peer in REDIS_PEERS) == (ours == "pgjobs-redis")
    ]

    out = [
        f"# pgjobs benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}, commit {meta['commit']}; {meta['cores']} cores, "
        f"{meta.get('database') or 'PostgreSQL ' + meta['postgres']}, Python {meta['python']}; "
        f"whole run {meta['total_s']} s. "
        + "; ".join(r["versions"] for r in results.values() if r.get("versions"))
        + ".",
        "",
    ]
    header = ["figure", *names, *(f"{ours} ÷ {peer}" for ours, peer in ratios)]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" + "---:|" * (len(header) - 1))
    for key, label, fmt in rows:
        cells = [fmt(figs[n][key]) for n in names]
        cells += [_ratio(figs[ours][key], figs[peer][key]) for ours, peer in ratios]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Ratios: for jobs/s above 1× means pgjobs is faster; for latency below 1× "
        "means pgjobs is faster. Enqueue figures are the median of "
        f"{c['enqueue_repeats']} run(s). Processing is N ÷ (last finish − first start) "
        "as each queue recorded it in its own table, at the best worker setting tried "
        "(below); workers start after all N jobs are enqueued. Latency: "
        f"{c['latency_n']} jobs enqueued one at a time every 20 ms to one idle worker; "
        "each job records time.time() when it starts.",
    ]
    busiest = _busiest(results)
    if busiest > 0.25:
        out.append(
            f"\n**Caution:** other work on the machine used up to {busiest:.0%} of its CPU "
            'around some measurements (columns "others\' CPU" and "CPU busy before" '
            "below); those figures are lower than this machine gives when idle."
        )
    for name, reason in skipped.items():
        out.append(f"\n**{name} not measured:** {reason}")

    out += ["", "## Settings behind the headline figures", ""]
    out.append("| system | 1 process | 2 processes | latency |")
    out.append("|---|---|---|---|")
    for n in names:
        r = results[n]
        b1 = (r["best"].get(1) or {}).get("config", "–")
        b2 = (r["best"].get(2) or {}).get("config", "–")
        bl = (r.get("best_latency") or {}).get("config", "–")
        out.append(f"| {n} | {b1} | {b2} | {bl} |")

    out += ["", "## Every processing run", ""]
    out.append(
        "| system | setting | jobs/s (DB timestamps) | jobs/s (wall, from spawn) "
        "| others' CPU during | attempts (jobs/s @ others' CPU) |"
    )
    out.append("|---|---|---:|---:|---:|---|")
    for n in names:
        for r in results[n]["throughput"]:
            if "rate" in r:
                producer = r.get("producer")
                if producer:  # --producer-rate: what the concurrent enqueuer saw
                    r = {
                        **r,
                        "config": f"{r['config']}, while another process enqueued "
                        f"{producer['n']} jobs ({producer['errors']} errors, slowest "
                        f"{producer['slowest_ms']:.0f} ms)",
                    }
                out.append(
                    f"| {n} | {r['config']} | {r['rate']:,.0f} | {r['wall_rate']:,.0f} "
                    f"| {_fmt_others(r)} | {_fmt_attempts(r)} |"
                )
            else:
                out.append(f"| {n} | {r['config']} | failed: {r.get('error', '?')} | | | |")

    out += ["", "## Every latency run", ""]
    out.append("| system | setting | p50 ms | p95 ms | mean ms | max ms | CPU busy before |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for n in names:
        for r in results[n]["latency"]:
            if "p50_ms" in r:
                out.append(
                    f"| {n} | {r['config']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                    f"| {r['mean_ms']:.1f} | {r['max_ms']:.1f} | {_fmt_busy(r.get('busy_before'))} |"
                )
            else:
                out.append(f"| {n} | {r['config']} | failed: {r.get('error', '?')} | | | | |")
    return "\n".join(out) + "\n"


def write(path: Path, text: str, raw: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
