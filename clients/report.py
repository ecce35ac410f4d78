"""The end-of-run table: per section, time to first token, duration, throughput and how long
the global summary took to follow; then the run's status and id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TITLE_WIDTH = 28


@dataclass
class SectionStats:
    index: int
    title: str
    attempts: int = 1
    chunks: int = 0
    output_tokens: int | None = None
    ttft_ms: int | None = None
    duration_ms: int | None = None
    finish_reason: str = "-"
    summary_latency_ms: int | None = None
    """Of the first (fast) summary update after the section: the one the next prompt uses."""

    @property
    def tokens(self) -> int:
        return self.output_tokens if self.output_tokens else self.chunks

    @property
    def tokens_per_s(self) -> float | None:
        if not self.duration_ms:
            return None
        return self.tokens * 1000 / self.duration_ms


class RunReport:
    def __init__(self) -> None:
        self.run_id: str | None = None
        self.status: str | None = None
        self.totals: dict[str, int] = {}
        self.total_sections: int | None = None
        self.last_error: dict[str, Any] | None = None
        self.sections: dict[str, SectionStats] = {}

    def feed(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if "run_id" in frame and "seq" in frame:
            self.run_id = frame["run_id"]
        if kind == "run_started":
            self.total_sections = len(frame["sections"])
        elif kind == "section_start":
            self.sections[frame["section_id"]] = SectionStats(
                index=frame["index"], title=frame["title"], attempts=frame["attempt"]
            )
        elif kind == "section_chunk":
            self._stats(frame).chunks += 1
        elif kind == "section_end":
            stats = self._stats(frame)
            stats.output_tokens = frame["usage"]["output_tokens"]
            # A section that ended in error or cancel reports ttft 0 whether or not a token came.
            unknown = frame["ttft_ms"] == 0 and frame["finish_reason"] in ("cancelled", "error")
            stats.ttft_ms = None if unknown else frame["ttft_ms"]
            stats.duration_ms = frame["duration_ms"]
            stats.finish_reason = frame["finish_reason"]
        elif kind == "summary_update":
            stats_ = self.sections.get(frame["through_section"])
            if stats_ is not None and stats_.summary_latency_ms is None:
                stats_.summary_latency_ms = frame["latency_ms"]
        elif kind == "error":
            self.last_error = frame
        elif kind == "run_end":
            self.status = frame["status"]
            self.totals = frame["totals"]

    def _stats(self, frame: dict[str, Any]) -> SectionStats:
        section_id = frame["section_id"]
        if section_id not in self.sections:  # began before the resume cursor
            self.sections[section_id] = SectionStats(index=frame["index"], title=section_id)
        return self.sections[section_id]

    def render(self) -> str:
        header = ("#", "section", "try", "tokens", "ttft ms", "dur ms", "tok/s", "summ ms", "end")
        rows = [header]
        for stats in sorted(self.sections.values(), key=lambda s: s.index):
            title = stats.title
            if len(title) > _TITLE_WIDTH:
                title = title[: _TITLE_WIDTH - 1] + "…"
            rows.append(
                (
                    str(stats.index + 1),
                    title,
                    str(stats.attempts),
                    str(stats.tokens),
                    _number(stats.ttft_ms),
                    _number(stats.duration_ms),
                    "-" if stats.tokens_per_s is None else f"{stats.tokens_per_s:.1f}",
                    _number(stats.summary_latency_ms),
                    stats.finish_reason,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 1 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.append(self.summary_line())
        return "\n".join(lines)

    def summary_line(self) -> str:
        done = self.totals.get("sections_completed", 0)
        of = f"/{self.total_sections}" if self.total_sections is not None else ""
        tokens = self.totals.get("output_tokens", 0)
        seconds = self.totals.get("duration_ms", 0) / 1000
        return (
            f"run {self.run_id or '?'}: {self.status or 'not ended'} · {done}{of} sections · "
            f"{tokens} tokens · {seconds:.1f} s"
        )


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)
