"""Turn measured results into the Markdown report, its raw JSON and the plots.

The headline table has one column per system and a pgjobs/peer ratio column
per peer. For jobs/s a ratio above 1 means pgjobs is faster; for latency a
ratio below 1 means pgjobs is faster. Then pgjobs against the targets of
issue #8 (among them pgjobs / PGQueuer's best), the plots (PNG, beside the
report: no-op jobs/s against concurrency, jobs/s by job kind, latency CDFs),
the setting each headline figure came from, and every individual run, so
nothing is hidden behind "best". With pgjobs-baseline in the run, a section
compares pgjobs with it figure by figure, against the run-to-run noise that
``run.py --repeat`` measures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from harness import PG, REPO_DIR

REDIS_PEERS = ("rq", "celery")  # compared with pgjobs-redis, not with pgjobs on the database
BASELINE = "pgjobs-baseline"  # pgjobs from another checkout, compared figure by figure


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
    kinds = res.get("best_kind") or {}
    lat = res.get("best_latency") or {}
    load = res.get("best_latency_load") or {}
    return {
        "enqueue_single": enq.get("single", {}).get("rate"),
        "enqueue_atomic": enq.get("atomic", {}).get("rate"),
        "enqueue_bulk": enq.get("bulk", {}).get("rate"),
        "enqueue_big": enq.get("bulk_big", {}).get("rate"),
        "enqueue_distinct": enq.get("distinct_big", {}).get("rate"),
        "process_1": (best.get(1) or {}).get("rate"),
        "process_2": (best.get(2) or {}).get("rate"),
        "orm": (kinds.get("orm") or {}).get("rate"),
        "sleep50": (kinds.get("sleep50") or {}).get("rate"),
        "latency_p50": lat.get("p50_ms"),
        "latency_p95": lat.get("p95_ms"),
        "load_p50": load.get("p50_ms"),
        "load_p95": load.get("p95_ms"),
    }


def _best_rate(res: dict) -> dict | None:
    """The fastest no-op processing run of a system, whatever its process count."""
    runs = [r for r in res.get("throughput", []) if "rate" in r]
    return max(runs, key=lambda r: r["rate"]) if runs else None


def _targets(results: dict) -> list[str]:
    """pgjobs against the goals of issue #8, each marked met or not."""
    ours = results.get("pgjobs")
    if not ours:
        return []
    figs = _figures(ours)
    out = ["", "## Targets (pgjobs)", ""]
    out.append("| target | measured | |")
    out.append("|---|---|---|")

    def row(what, measured, ok):
        verdict = "–" if ok is None else ("met" if ok else "**not met**")
        out.append(f"| {what} | {measured} | {verdict} |")

    peer = results.get("pgqueuer")
    if peer:
        mine, theirs = _best_rate(ours), _best_rate(peer)
        if mine and theirs:
            ratio = mine["rate"] / theirs["rate"]
            row(
                "no-op jobs/s, pgjobs / PGQueuer best ≥ 1.5×",
                f"{ratio:.2f}× ({mine['rate']:,.0f} with {mine['config']}; PGQueuer "
                f"{theirs['rate']:,.0f} with {theirs['config']})",
                ratio >= 1.5,
            )
        for procs in (1, 2):
            a = (ours["best"].get(procs) or {}).get("rate")
            b = (peer["best"].get(procs) or {}).get("rate")
            if a and b:
                row(
                    f"… with {procs} process{'es' if procs > 1 else ''} each",
                    f"{a / b:.2f}× ({a:,.0f} / {b:,.0f})",
                    None,
                )
    for key, what in (("enqueue_big", "the same job"), ("enqueue_distinct", "own arguments")):
        rate = figs[key]
        if rate is not None:
            theirs = _figures(peer)[key] if peer else None
            versus = f"; PGQueuer {theirs:,.0f}, {rate / theirs:.2f}×" if theirs else ""
            row(
                f"enqueue_many ≥ 100,000 jobs/s in one call ({what})",
                f"{rate:,.0f} jobs/s{versus}",
                rate >= 100_000,
            )
    p50, p95 = figs["latency_p50"], figs["latency_p95"]
    if p50 is not None:
        row("idle latency p50 ≤ 2 ms", f"{p50:.1f} ms", p50 <= 2)
        row("idle latency p95 ≤ 5 ms", f"{p95:.1f} ms", p95 <= 5)
    load = ours.get("best_latency_load")
    if load and "p95_ms" in load:
        reached = _load_reached(load)
        row(
            f"latency p95 ≤ 10 ms under {load['load_rate']:,.0f} jobs/s",
            f"{load['p95_ms']:.1f} ms ({load['producer']['rate']:,.0f} jobs/s enqueued"
            + ("" if reached else "; the offered rate was not reached: machine too busy?")
            + ")",
            load["p95_ms"] <= 10 if reached else None,
        )
    return out


def _load_reached(run: dict) -> bool:
    """Whether the producers enqueued at least 90% of the offered rate."""
    return run["producer"]["rate"] >= 0.9 * run["load_rate"]


def _values(r: dict | None, key: str) -> list[float] | None:
    """Every run's ``key`` of one measurement: its --repeat runs, an enqueue's
    repeats, or the one figure."""
    if not r or key not in r:
        return None
    runs = (r.get("repeats") or {}).get(key)
    if runs:
        return runs
    if key == "rate" and r.get("runs"):
        return r["runs"]
    return [r[key]]


def _spread(values: list[float]) -> float | None:
    """(max − min) ÷ median of one figure's runs; None for a single run."""
    if len(values) < 2 or not statistics.median(values):
        return None
    return (max(values) - min(values)) / statistics.median(values)


def _comparison(results: dict, meta: dict) -> list[str]:
    """pgjobs against pgjobs-baseline, each figure against the noise of both."""
    ours, base = results.get("pgjobs"), results.get(BASELINE)
    if not ours or not base:
        return []
    pairs = []  # (figure, setting, baseline's run, ours, key, higher is better)
    for mode, what in (
        ("single", "enqueue, one transaction per job"),
        ("atomic", "enqueue, many in one transaction"),
        ("bulk", "enqueue, bulk API"),
        ("bulk_big", "enqueue, one big bulk call"),
        ("distinct_big", "enqueue, one big bulk call, own arguments"),
    ):
        theirs, mine = base["enqueue"].get(mode), ours["enqueue"].get(mode)
        pairs.append((f"{what} (jobs/s)", "", theirs, mine, "rate", True))
    runs = [*base["throughput"], *base.get("kinds", [])]
    theirs = {(r.get("kind"), r.get("config")): r for r in runs}
    for r in [*ours["throughput"], *ours.get("kinds", [])]:
        kind, setting = r.get("kind"), r.get("config")
        pairs.append((f"{kind} (jobs/s)", setting, theirs.get((kind, setting)), r, "rate", True))
    for group, what in (("latency", "idle"), ("latency_load", "under load")):
        theirs = {r.get("config"): r for r in base.get(group, [])}
        for r in ours.get(group, []):
            for key in ("p50_ms", "p95_ms"):
                figure = f"latency {key[:3]} {what} (ms)"
                pairs.append((figure, r.get("config"), theirs.get(r.get("config")), r, key, False))

    # The median of an even count is its lower middle value, as the run kept (median_run).
    def cell(values, fmt):
        if not values:
            return "–"
        mid = fmt(statistics.median_low(values))
        return mid if len(values) < 2 else f"{mid} ({fmt(min(values))}–{fmt(max(values))})"

    repeat = meta.get("repeat", 1)
    out = ["", f"## pgjobs against {BASELINE}", ""]
    out.append(
        f"{base.get('versions', BASELINE)}; {ours.get('versions', 'pgjobs')}. "
        + (
            "Measured turn about (`--alternate`), setting by setting. "
            if meta.get("alternate")
            else "Measured one after the other, not turn about: drift in the machine's speed "
            "between the two shows as a difference. "
        )
        + (
            f"Each figure is the median of {repeat} runs (lowest–highest in brackets); "
            "noise is the larger of the two spreads, (highest − lowest) ÷ median, and a "
            "change beyond it in either direction is marked. "
            if repeat > 1
            else "One run each (`--repeat 1`): no noise measured, so no change is marked. "
        )
        + "Enqueue figures are the median of the enqueue repeats."
    )
    out += ["", f"| figure | setting | {BASELINE} | pgjobs | pgjobs ÷ {BASELINE} | noise | |"]
    out.append("|---|---|---:|---:|---:|---:|---|")
    for figure, setting, theirs, mine, key, higher in pairs:
        a, b = _values(mine, key), _values(theirs, key)
        if not a and not b:
            continue
        fmt = _fmt_rate if higher else _fmt_ms
        ratio, noise, verdict = None, None, "–"
        if a and b and statistics.median_low(b):
            ratio = statistics.median_low(a) / statistics.median_low(b)
            spreads = (_spread(a), _spread(b))
            noise = None if None in spreads else max(spreads)
        if noise is not None:
            up, down = ratio > 1 + noise, ratio < 1 - noise  # up: more jobs/s, or more ms
            if up or down:
                verdict = "better, beyond noise" if up == higher else "**worse, beyond noise**"
            else:
                verdict = "within noise"
        out.append(
            f"| {figure} | {setting or '–'} | {cell(b, fmt)} | {cell(a, fmt)} "
            f"| {'–' if ratio is None else f'{ratio:.2f}×'} "
            f"| {'–' if noise is None else f'±{noise:.0%}'} | {verdict} |"
        )
    return out


def _fmt_latency_repeats(r: dict) -> str:
    runs = r.get("repeats") or {}
    pairs = zip(runs.get("p50_ms") or [], runs.get("p95_ms") or [], strict=False)
    text = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in pairs)
    errors = r.get("repeat_errors")
    return text + (f"; {len(errors)} failed" if errors else "")


def _fmt_repeats(r: dict, key: str, fmt) -> str:
    """Every --repeat run's figure, in the order measured."""
    runs = (r.get("repeats") or {}).get(key) or []
    text = ", ".join(fmt(v) for v in runs)
    errors = r.get("repeat_errors")
    return text + (f"; {len(errors)} failed" if errors else "")


def markdown(results: dict, skipped: dict, meta: dict, plots: dict | None = None) -> str:
    c = meta["counts"]
    load_rate = c.get("load_rate") or 0
    rows = [
        ("enqueue_single", "enqueue, one transaction per job (jobs/s)", _fmt_rate),
        (
            "enqueue_atomic",
            f"enqueue, {c['enqueue_n']:,} jobs in one transaction (jobs/s)",
            _fmt_rate,
        ),
        ("enqueue_bulk", f"enqueue, bulk API, {c['enqueue_n']:,} jobs (jobs/s)", _fmt_rate),
        (
            "enqueue_big",
            f"enqueue, bulk API, {c.get('big_n', 0):,} jobs in one call (jobs/s)",
            _fmt_rate,
        ),
        (
            "enqueue_distinct",
            f"enqueue, bulk API, {c.get('big_n', 0):,} jobs each with its own argument (jobs/s)",
            _fmt_rate,
        ),
        ("process_1", "process no-op jobs, 1 worker process (jobs/s)", _fmt_rate),
        ("process_2", "process no-op jobs, 2 worker processes (jobs/s)", _fmt_rate),
        ("orm", "process jobs of one ORM insert, best setting (jobs/s)", _fmt_rate),
        ("sleep50", "process jobs of a 50 ms sleep, best setting (jobs/s)", _fmt_rate),
        ("latency_p50", "enqueue→start latency p50, idle worker (ms)", _fmt_ms),
        ("latency_p95", "enqueue→start latency p95, idle worker (ms)", _fmt_ms),
        ("load_p50", f"latency p50 while {load_rate:,.0f} jobs/s are enqueued (ms)", _fmt_ms),
        ("load_p95", f"latency p95 while {load_rate:,.0f} jobs/s are enqueued (ms)", _fmt_ms),
    ]
    names = list(results)
    figs = {n: _figures(results[n]) for n in names}
    # Leave out rows nobody measured (e.g. job kinds on Redis, no load run).
    rows = [r for r in rows if any(figs[n][r[0]] is not None for n in names)]
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
        + (
            "The server had autovacuum off; it was turned on for this run (PostgreSQL's "
            "default) and restored afterwards. "
            if meta.get("autovacuum_turned_on")
            else ""
        )
        + "; ".join(r["versions"] for r in results.values() if r.get("versions"))
        + "."
        + (
            " The systems were measured turn about (`--alternate`)."
            if meta.get("alternate")
            else ""
        )
        + (
            f" Each processing and latency figure is the median of {meta['repeat']} runs "
            "(`--repeat`); every run is listed below."
            if meta.get("repeat", 1) > 1
            else ""
        )
        + (
            f" Settings chosen with `--only {' --only '.join(meta['only'])}`."
            if meta.get("only")
            else ""
        ),
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
        "as each queue recorded it in its own tables, at the best worker setting tried "
        f"(below); workers start after all N jobs are enqueued. N = {c['jobs']:,} no-op, "
        f"{c.get('orm_jobs', 0):,} ORM-insert and {c.get('sleep50_jobs', 0):,} 50-ms-sleep "
        "jobs"
        + (
            " (fewer for the slower queues in a quick run: see every run below)"
            if meta["mode"] == "quick"
            else ""
        )
        + ". Latency: "
        f"{c['latency_n']} jobs enqueued one at a time every 20 ms to one worker process; "
        "each job records time.time() when it starts. Under load, other processes "
        f"enqueue {load_rate:,.0f} no-op jobs/s meanwhile, each in its own transaction, "
        "and the same worker runs them; a queue that processes fewer no-op jobs/s than "
        "that is not measured under load (its backlog would only grow).",
    ]
    out += _targets(results)
    out += _comparison(results, meta)
    busiest = _busiest(results)
    if busiest > 0.25:
        out.append(
            f"\n**Caution:** other work on the machine used up to {busiest:.0%} of its CPU "
            'around some measurements (columns "others\' CPU" and "CPU busy before" '
            "below); those figures are lower than this machine gives when idle."
        )
    for name, reason in skipped.items():
        out.append(f"\n**{name} not measured:** {reason}")

    if plots:
        out += ["", "## Plots", ""]
        for title, filename in plots.items():
            out.append(f"![{title}]({filename})")
            out.append("")

    out += ["", "## Settings behind the headline figures", ""]
    out.append("| system | 1 process | 2 processes | orm | sleep50 | latency | under load |")
    out.append("|---|---|---|---|---|---|---|")
    for n in names:
        r = results[n]
        kinds = r.get("best_kind") or {}
        cells = [
            (r["best"].get(1) or {}).get("config", "–"),
            (r["best"].get(2) or {}).get("config", "–"),
            (kinds.get("orm") or {}).get("config", "–"),
            (kinds.get("sleep50") or {}).get("config", "–"),
            (r.get("best_latency") or {}).get("config", "–"),
            (r.get("best_latency_load") or {}).get("config", "–"),
        ]
        out.append(f"| {n} | " + " | ".join(cells) + " |")

    repeated = meta.get("repeat", 1) > 1
    out += ["", "## Every processing run", ""]
    out.append(
        "| system | jobs | setting | jobs/s (DB timestamps) | jobs/s (wall, from spawn) "
        "| others' CPU during | attempts (jobs/s @ others' CPU) |"
        + (" each --repeat run (jobs/s) |" if repeated else "")
    )
    out.append("|---|---|---|---:|---:|---:|---|" + ("---|" if repeated else ""))
    for n in names:
        for r in [*results[n]["throughput"], *results[n].get("kinds", [])]:
            kind = r.get("kind", "noop")
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
                    f"| {n} | {r.get('n', 0):,} {kind} | {r['config']} | {r['rate']:,.0f} "
                    f"| {r['wall_rate']:,.0f} | {_fmt_others(r)} | {_fmt_attempts(r)} |"
                    + (f" {_fmt_repeats(r, 'rate', _fmt_rate)} |" if repeated else "")
                )
            else:
                out.append(
                    f"| {n} | {kind} | {r['config']} | failed: {r.get('error', '?')} | | | |"
                    + (" |" if repeated else "")
                )

    out += ["", "## Every latency run", ""]
    out.append(
        "| system | setting | load (jobs/s enqueued) | p50 ms | p95 ms | p99 ms | mean ms "
        "| max ms | CPU busy before |" + (" each --repeat run (p50 / p95 ms) |" if repeated else "")
    )
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if repeated else ""))
    for n in names:
        for r in [*results[n]["latency"], *results[n].get("latency_load", [])]:
            producer = r.get("producer")
            load = (
                f"{producer['rate']:,.0f} of {r['load_rate']:,.0f}"
                + ("" if _load_reached(r) else " (**not reached**)")
                if producer
                else ("–" if "skipped" in r or r in results[n]["latency"] else "failed")
            )
            if "p50_ms" in r:
                p99 = r.get("p99_ms")
                out.append(
                    f"| {n} | {r['config']} | {load if producer else 'idle'} "
                    f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                    f"| {'–' if p99 is None else f'{p99:.1f}'} "
                    f"| {r['mean_ms']:.1f} | {r['max_ms']:.1f} | {_fmt_busy(r.get('busy_before'))} |"
                    + (f" {_fmt_latency_repeats(r)} |" if repeated else "")
                )
            elif "skipped" in r:
                out.append(f"| {n} | {r['config']} | not measured: {r['skipped']} | | | | | | |")
            else:
                out.append(
                    f"| {n} | {r['config']} | {load} | failed: {r.get('error', '?')} | | | | | |"
                )
    return "\n".join(out) + "\n"


def plots(results: dict, output: Path) -> dict:
    """Draw the PNGs beside ``output``; {title: file name} for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plots: skipped (matplotlib: {e})", flush=True)
        return {}
    drawn = {}
    for title, suffix, draw in (
        ("No-op jobs/s against concurrency", "throughput", _plot_throughput),
        ("Jobs/s by job kind", "kinds", _plot_kinds),
        ("Enqueue→start latency, CDF", "latency", _plot_latency),
    ):
        path = output.with_name(f"{output.stem}-{suffix}.png")
        fig = draw(plt, results)
        if fig is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        drawn[title] = path.name
    return drawn


def _colors(plt, names):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _plot_throughput(plt, results):
    """x: each system's concurrency knob (PGQueuer: batch size); best per x."""
    lines = {}
    for name, res in results.items():
        for r in res.get("throughput", []):
            if "rate" in r:
                points = lines.setdefault((name, r["processes"]), {})
                x = r.get("x") or 1
                points[x] = max(points.get(x, 0), r["rate"])
    if not lines:
        return None
    colors = _colors(plt, list(results))
    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, procs), points in sorted(lines.items()):
        xs = sorted(points)
        ax.plot(
            xs,
            [points[x] for x in xs],
            marker="o" if procs == 1 else "s",
            linestyle="-" if procs == 1 else "--",
            color=colors[name],
            label=f"{name}, {procs} process{'es' if procs > 1 else ''}",
        )
    ax.set_xscale("log")
    ticks = sorted({x for points in lines.values() for x in points})
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrency per process (PGQueuer: --batch-size; best run at each)")
    ax.set_ylabel("no-op jobs/s (DB timestamps)")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Processing rate of pre-enqueued no-op jobs")
    return fig


def _plot_kinds(plt, results):
    kinds = ("noop", "orm", "sleep50")
    names = [n for n in results if any((results[n].get("best_kind") or {}).values())]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.8 / len(names)
    colors = _colors(plt, list(results))
    for i, name in enumerate(names):
        res = results[name]
        best = {"noop": _best_rate(res), **(res.get("best_kind") or {})}
        values = [(best.get(k) or {}).get("rate", 0) for k in kinds]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(kinds))]
        ax.bar(xs, values, width, label=name, color=colors[name])
    ax.set_xticks(range(len(kinds)), ["no-op", "one ORM insert", "50 ms sleep"])
    ax.set_yscale("log")
    ax.set_ylabel("jobs/s, best setting (log scale)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Processing rate by job kind")
    return fig


def _plot_latency(plt, results):
    colors = _colors(plt, list(results))
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for name, res in results.items():
        for run, style, what in (
            (res.get("best_latency"), "-", "idle"),
            (res.get("best_latency_load"), "--", "under load"),
        ):
            lat = sorted((run or {}).get("latencies_ms") or [])
            if not lat:
                continue
            ys = [(i + 1) / len(lat) for i in range(len(lat))]
            ax.step(lat, ys, where="post", linestyle=style, color=colors[name],
                    label=f"{name}, {what}")  # fmt: skip
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for target in (2, 5, 10):
        ax.axvline(target, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("enqueue → start (ms, log scale); dotted: 2, 5 and 10 ms")
    ax.set_ylabel("fraction of probes")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Latency CDF: idle worker (solid), under load (dashed)")
    return fig


def write(path: Path, text: str, raw: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
