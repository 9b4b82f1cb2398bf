"""Markdown tables, the raw JSON, a PNG of the ratios, and bench/RESULTS.md.

Why every raw number goes to JSON while the tables show median (min-max): the tables are for
reading at a glance, the JSON for whoever wants to check the spread or compare two runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.harness import Metric, Row, Run, cpu_per_op, fmt, human_size

PEERS = ("boto3", "rclone", "s3fs", "local", "s3torchconnector", "fsspec")
FLEET_SHARED, FLEET_ALONE = "mountfs shared", "mountfs alone"  # the row keys of bench/fleet.py
RSS_FLAT = 1.2  # a by-size table calls RSS flat when the largest file's peak is at most this x the smallest's


def _figure(metric: Metric, tool: str) -> tuple[str, str, str, str]:
    """(median, min-max, ratio, peak RSS) cells for one row."""
    row = metric.rows[tool]
    rss = f"{row.peak_rss_kib / 1024:,.0f}" if row.peak_rss_kib else "-"
    if row.skipped:
        return f"skipped: {row.skipped}", "", "", rss
    summary = row.summary()
    if summary is None:
        reason = row.failures[0] if row.failures else "no figure"
        return f"failed: {reason}", "", "", rss
    median, low, high = summary
    spread = f"{fmt(low)}-{fmt(high)}" if len(row.values) > 1 else ""
    if row.failures:
        spread += f" ({len(row.failures)} of {len(row.values) + len(row.failures)} failed: {row.failures[0]})"
    ratio = metric.ratio(tool)
    ratio_text = "-" if tool == "mountfs" else ("n/a" if ratio is None else f"{ratio:.2f}")
    return fmt(median), spread, ratio_text, rss


def metric_table(metric: Metric, repeats: int) -> str:
    if metric.by_size:
        return size_table(metric, repeats)
    better = "higher is better" if metric.higher_is_better else "lower is better"
    lines = [
        f"### {metric.name}: {metric.title}",
        "",
        f"{metric.unit}, {better}; median of {repeats} (min-max); mountfs/tool > 1 means mountfs is faster.",
        "",
        f"| tool | {metric.unit} | min-max | mountfs/tool | peak RSS MiB |",
        "|---|---:|---|---:|---:|",
    ]
    for tool, row in metric.rows.items():
        median, spread, ratio, rss = _figure(metric, tool)
        lines.append(f"| {row.label} | {median} | {spread} | {ratio} | {rss} |")
    return "\n".join(lines)


def size_table(metric: Metric, repeats: int) -> str:
    """One tool at several file sizes (big-rss): the figure, its peak RSS, and how RSS grew."""
    rows = list(metric.rows.items())
    first_rss = rows[0][1].peak_rss_kib if rows else None
    first_name = _size_name(rows[0][1]) if rows else "first"
    lines = [
        f"### {metric.name}: {metric.title}",
        "",
        f"{metric.unit} (higher is better) and peak RSS (VmHWM of a fresh daemon per read, largest over "
        f"the repeats); median of {repeats} (min-max). mountfs only: rclone and s3fs need S3.",
        "",
        f"| file size | {metric.unit} | min-max | peak RSS MiB | peak RSS / {first_name} peak |",
        "|---|---:|---|---:|---:|",
    ]
    for key, row in rows:
        median, spread, _ratio, rss = _figure(metric, key)
        growth = "-" if row is rows[0][1] else (
            f"{row.peak_rss_kib / first_rss:.2f}" if row.peak_rss_kib and first_rss else "n/a")
        lines.append(f"| {row.label} | {median} | {spread} | {rss} | {growth} |")
    lines += ["", rss_verdict(metric)]
    return "\n".join(lines)


def _size_name(row: Row) -> str:
    return row.label.removeprefix(f"{row.tool} ")


def rss_verdict(metric: Metric) -> str:
    """"RSS flat: 10 GiB peak / 1 GiB peak = 1.02 ..." for a by-size metric."""
    rows = list(metric.rows.values())
    if len(rows) < 2:
        return "RSS flat: n/a (fewer than two file sizes)"
    big, small = _size_name(rows[-1]), _size_name(rows[0])
    growth = metric.rss_growth()
    if growth is None:
        return f"RSS flat: n/a ({big} peak / {small} peak needs both peaks)"
    verdict = "RSS flat" if growth <= RSS_FLAT else "RSS NOT flat"
    return (f"**{verdict}: {big} peak / {small} peak = {growth:.2f}** (flat means at most "
            f"{RSS_FLAT:.2f} for the larger file).")


def _lines(run: Run) -> list[tuple[str, Metric, dict[str, Row]]]:
    """(table line name, metric, tool -> row) per line: one per metric, one per row of a by-size metric."""
    out: list[tuple[str, Metric, dict[str, Row]]] = []
    for metric in run.metrics.values():
        if metric.by_size:
            out += [(f"{metric.name} {_size_name(row)}", metric, {row.tool: row})
                    for row in metric.rows.values()]
        else:
            out.append((metric.name, metric, {row.tool: row for row in metric.rows.values()}))
    return out


def _rss_lines(run: Run) -> list[tuple[str, dict[str, Row]]]:
    return [(name, rows) for name, _, rows in _lines(run)]


def rss_table(run: Run) -> str:
    """Peak RSS of each daemon per workload (the largest over the repeats)."""
    lines_rows = _rss_lines(run)
    tools = [t for t in ("mountfs", "rclone", "s3fs")
             if any(t in rows and rows[t].peak_rss_kib for _, rows in lines_rows)]
    if not tools:
        return ""
    lines = ["### peak RSS of each daemon (MiB, VmHWM, largest over the repeats)", "",
             "| workload | " + " | ".join(tools) + " |", "|---|" + "---:|" * len(tools)]
    for name, rows in lines_rows:
        cells = []
        for tool in tools:
            row = rows.get(tool)
            cells.append(f"{row.peak_rss_kib / 1024:,.0f}" if row and row.peak_rss_kib else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counters_table(run: Run) -> str:
    """What each mountfs figure cost it (medians): GETs, bytes fetched vs bytes served, cache hits."""
    lines = ["### mountfs counters per measurement (median over repeats, from `mountfs status`)", "",
             "| measurement | store requests | GETs | MiB fetched | MiB served | cache hits | misses |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    any_row = False
    for name, rows in _rss_lines(run):
        row = rows.get("mountfs")
        if row is None:
            continue
        counters = [d["counters"] for d in row.details if d.get("counters")]
        if not counters:
            continue
        any_row = True

        def med(key: str, counters: list[dict[str, int]] = counters) -> float:
            values = sorted(c.get(key, 0) for c in counters)
            return values[len(values) // 2]

        lines.append(f"| {name} | {med('store.requests'):,.0f} | {med('store.gets'):,.0f} | "
                     f"{med('store.bytes_fetched') / 2**20:,.1f} | "
                     f"{med('reads.bytes_served') / 2**20:,.1f} | {med('cache.hits'):,.0f} | "
                     f"{med('cache.misses'):,.0f} |")
    return "\n".join(lines) if any_row else ""


def cpu_table(run: Run) -> str:
    """The daemon's CPU (user + system) per unit of work, median over the repeats: the figure the
    noise of a shared machine moves least, so a change is judged by it beside the throughput."""
    tools = ("mountfs", "rclone", "s3fs")
    lines = ["### daemon CPU per unit of work (user + system, median over the repeats)", "",
             "| workload | unit | " + " | ".join(tools) + " |", "|---|---|" + "---:|" * len(tools)]
    any_row = False
    for name, metric, rows in _lines(run):
        cells, unit_name = [], ""
        for tool in tools:
            details = rows[tool].details if tool in rows else []
            figures = [f for f in (cpu_per_op(metric.unit, d) for d in details) if f]
            if not figures:
                cells.append("-")
                continue
            unit_name = figures[0][1]
            values = sorted(v for v, _ in figures)
            cells.append(fmt(values[len(values) // 2]))
        if unit_name:
            any_row = True
            lines.append(f"| {name} | {unit_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if any_row else ""


def profile_tables(run: Run) -> str:
    """Where the mountfs daemon's CPU went (py-spy, `--profile`): the top frames by own time of each
    profiled measurement, with their total time (the share of samples they were anywhere in)."""
    if not run.profiles:
        return ""
    lines = ["### where the mountfs daemon's Python time goes (py-spy samples of the GIL holder in the "
             "first repeat, `--profile`)"]
    for metric, found in run.profiles.items():
        lines += ["", f"{metric}: {found['samples']:,} samples at {found['rate']} Hz", "",
                  "| frame (own time first) | own % | total % |", "|---|---:|---:|"]
        lines += [f"| `{name}` | {own * 100:.1f} | {total * 100:.1f} |" for name, own, total in found["top"]]
    return "\n".join(lines)


def markdown(run: Run) -> str:
    from bench.wan import link_note, link_table

    repeats = int(run.settings.get("repeat", 1))
    parts = [metric_table(m, repeats) for m in run.metrics.values()]
    if note := link_note(run):
        parts.insert(0, note)
    for extra in (cpu_table(run), profile_tables(run), rss_table(run), counters_table(run), link_table(run)):
        if extra:
            parts.append(extra)
    return "\n\n".join(parts) + "\n"


def machine_markdown(run: Run, finished: bool = True) -> str:
    m = run.machine
    v = m.get("versions", {})
    took = f"; run took {run.seconds / 60:.1f} min" if finished else ""
    lines = [
        f"- date: {m.get('date')}{took}" + (" (interrupted)" if run.interrupted else ""),
        f"- machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('memory_gib')} GiB RAM, "
        f"{m.get('os')}, kernel {m.get('kernel')}, Python {m.get('python')}; load average at start "
        f"{m.get('loadavg_at_start')}",
        f"- mountfs {v.get('mountfs')} (git {v.get('mountfs_git')}), pyfuse3 {v.get('pyfuse3')}",
        f"- boto3 {v.get('boto3')} (botocore {v.get('botocore')}); {v.get('rclone')}; {v.get('s3fs')}",
        f"- server: SeaweedFS `weed mini` on 127.0.0.1 ({v.get('seaweedfs')}); {v.get('fusermount3')}",
        f"- settings: {json.dumps(run.settings)}",
    ]
    return "\n".join(lines)


def _jsonable(run: Run) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    for name, metric in run.metrics.items():
        out = data["metrics"][name]
        for tool, row in metric.rows.items():
            summary = row.summary()
            out["rows"][tool]["median"] = summary[0] if summary else None
            out["rows"][tool]["min"] = summary[1] if summary else None
            out["rows"][tool]["max"] = summary[2] if summary else None
            out["rows"][tool]["ratio_mountfs_over_tool"] = metric.ratio(tool) if tool != "mountfs" else None
        if metric.by_size:
            out["rss_growth_last_over_first"] = metric.rss_growth()
    return data


def write_json(run: Run, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(run), indent=1, default=str) + "\n")


CHARTED = (*PEERS, FLEET_ALONE)
CHART_LABELS = {FLEET_ALONE: "shared cache vs none (fleet)"}


def _chart_ratio(metric: Metric, tool: str) -> float | None:
    """mountfs / tool; for the fleet's rows, with the shared cache / without it (> 1: better with)."""
    return metric.ratio(tool, FLEET_SHARED) if tool == FLEET_ALONE else metric.ratio(tool)


def write_png(run: Run, path: Path) -> str:
    """A grouped bar chart of mountfs/tool per measurement (log scale, 1 = parity); a message."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib, or `make bench`)"
    names = [n for n, m in run.metrics.items() if any(_chart_ratio(m, t) for t in CHARTED)]
    tools = [t for t in CHARTED if any(_chart_ratio(run.metrics[n], t) for n in names)]
    if not names or not tools:
        return "no ratios to chart"
    width = 0.8 / len(tools)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(names) + 2), 5.5))
    points: dict[str, tuple[list[float], list[float]]] = {t: ([], []) for t in tools}
    for j, name in enumerate(names):  # the bars of one measurement centred on its tick
        present = [(t, r) for t in tools if (r := _chart_ratio(run.metrics[name], t))]
        for i, (tool, ratio) in enumerate(present):
            points[tool][0].append(j + (i - (len(present) - 1) / 2) * width)
            points[tool][1].append(ratio)
    for tool in tools:
        xs, ys = points[tool]
        bars = ax.bar(xs, ys, width, label=CHART_LABELS.get(tool, f"vs {tool}"))
        ax.bar_label(bars, labels=[f"{y:.2g}" for y in ys], fontsize=7, padding=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("mountfs / tool (> 1: mountfs faster)")
    ax.set_title(f"mountfs vs peers, {run.settings.get('scale')} scale, {run.machine.get('date', '')[:10]}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def big_rss_how(run: Run) -> str:
    sizes = sorted(run.settings.get("dataset", {}).get("rss_sizes") or [1 << 30, 10 << 30])
    small, big = human_size(sizes[0]), human_size(sizes[-1])
    return (
        "big-rss checks that the mountfs daemon's memory stays flat whatever the file size: it makes "
        "a local folder holding one sparse file (`truncate`, then 1 MiB of random bytes at 4 offsets "
        "so it is not all zeros), mounts that folder as a `file://` bucket on a fresh mountfs daemon "
        "with an empty cache dir (no S3 involved), drops the page cache, reads the whole file once "
        "with the same 1 MiB sequential reads, spot-checks the bytes, and records MB/s and the "
        "daemon's VmHWM (its peak RSS since it started, hence a daemon per read). It does this for "
        f"a {big} and a {small} file and reports {big} peak / {small} peak (flat: at most "
        f"{RSS_FLAT:.1f}); the cache dir, a whole file's worth of blocks, is deleted after each read. "
        "rclone and s3fs need S3, so only mountfs is measured."
    )


def _random_access_how(run: Run) -> list[str]:
    from bench.random_access import how

    text = how(run)
    return [text, ""] if text else []


def write_results_md(run: Run, path: Path, tables: str) -> None:
    """RESULTS.md and, beside it, RESULTS.png: the chart is committed with the figures it draws."""
    chart = path.with_suffix(".png")
    drawn = write_png(run, chart).startswith("wrote")
    link = run.settings.get("link")
    wan = path.parent / "RESULTS-wan.md"
    text = "\n".join([
        "# mountfs benchmark results" + (f" through a shaped link ({link})" if link else ""),
        "",
        "Written by `python -m bench` (`make bench`) from its last full run"
        + (" with `--wan`: every tool reaches SeaweedFS through bench/wan.py's proxy" if link else "")
        + "; raw numbers in `bench/results/latest.json` (not committed).",
        "",
        *([f"The same through a shaped link (`python -m bench --wan`): [{wan.name}]({wan.name}).", ""]
          if not link and wan.exists() else []),
        *([f"![mountfs / tool per measurement]({chart.name})", ""] if drawn else []),
        *(["The part of the daemon's CPU that pyfuse3 and trio alone cost, measured beside mountfs: "
           "[FLOOR.md](FLOOR.md) (`python -m bench.fuse_floor`).", ""]
          if (path.parent / "FLOOR.md").exists() else []),
        machine_markdown(run),
        "",
        "How: one SeaweedFS `weed mini` on 127.0.0.1 serves every tool. Each cold figure is a fresh "
        "mount with an empty cache dir after `sync; echo 3 > /proc/sys/vm/drop_caches`, with the "
        "server's data files read back in, so every tool, boto3 too, reads from the same warm "
        "server (before, only boto3 did); reads through "
        "a mount are plain 1 MiB `read`s into a page-aligned buffer (sequential), `pread` at seeded "
        "4 KiB-aligned offsets (random, one reader), 8 reader threads (small files), os.walk + "
        "os.stat (metadata). rclone runs with `--vfs-cache-mode full --use-server-modtime`, s3fs "
        "without a cache. Every tool keeps its own kernel read_ahead_kb (mountfs raises its own "
        "mount's to 8 MiB when root, rclone and s3fs keep the default 128 KiB; the JSON records each "
        "mount's value). The host below this VM also caches the disk, so cold and warm figures vary "
        "from run to run; the machine is shared, see the load average.",
        "",
        big_rss_how(run),
        "",
        *_random_access_how(run),
        *([f"- note: {n}" for n in run.notes] + [""] if run.notes else []),
        tables,
    ])
    path.write_text(text)
