"""What `docgen` shows on stderr: a progress bar per section, the global summary each time it
changes, notices and errors. The bar is redrawn in place with `\\r`; every other line clears
it first, so the two never garble each other."""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

BAR_CELLS = 20
REDRAW_INTERVAL_S = 0.05


@dataclass
class _Bar:
    index: int
    title: str
    target_tokens: int
    tokens: int = 0
    """`section_chunk` frames so far: one per LLM token, close enough for a progress bar."""


class Console:
    """`progress` turns on the per-section lines and summaries; `live_bar` also draws the bar
    while a section is written (off when the document itself streams to the same terminal)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        quiet: bool = False,
        progress: bool = False,
        live_bar: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._quiet = quiet
        self._progress = progress and not quiet
        self._live_bar = live_bar
        self._clock = clock
        self._width = max(40, shutil.get_terminal_size(fallback=(100, 24)).columns - 1)
        self._drawn = 0
        """Characters of the bar currently on screen (0: none)."""
        self._last_draw = 0.0
        self._bar: _Bar | None = None
        self._total: int | None = None

    # --- messages --------------------------------------------------------------------------

    def info(self, line: str) -> None:
        if not self._quiet:
            self._print(line)

    def error(self, line: str) -> None:
        self._print(line)

    def close(self) -> None:
        self._clear()

    def _print(self, text: str) -> None:
        self._clear()
        self._stream.write(text + "\n")
        self._stream.flush()

    # --- progress --------------------------------------------------------------------------

    def feed(self, frame: dict[str, Any]) -> None:
        if not self._progress:
            return
        kind = frame["type"]
        if kind == "run_started":
            self._total = len(frame["sections"])
        elif kind == "section_start":
            self._bar = _Bar(frame["index"], frame["title"], frame["target_tokens"])
            self._draw(force=True)
        elif kind == "section_chunk":
            if self._bar is None or self._bar.index != frame["index"]:
                # It began before the resume cursor: its title and target are unknown.
                self._bar = _Bar(frame["index"], frame["section_id"], 0)
            self._bar.tokens += 1
            self._draw(force=False)
        elif kind == "section_end":
            if self._bar is None or self._bar.index != frame["index"]:
                self._bar = _Bar(frame["index"], frame["section_id"], 0)
            seconds = frame["duration_ms"] / 1000
            self._print(f"{self._bar_text(self._bar)}  {seconds:.1f} s  {frame['finish_reason']}")
            self._bar = None
        elif kind == "summary_update":
            head = (
                f"  summary v{frame['version']} ({frame['method']}, "
                f"{frame['latency_ms']} ms after the section): "
            )
            body = " ".join(frame["summary"].split())
            wrapped = textwrap.fill(
                head + body, width=self._width, subsequent_indent="    ", break_long_words=False
            )
            self._print(wrapped)

    def _bar_text(self, bar: _Bar) -> str:
        position = f"[{bar.index + 1}/{self._total}]" if self._total else f"[{bar.index + 1}]"
        if bar.target_tokens:
            filled = min(BAR_CELLS, bar.tokens * BAR_CELLS // bar.target_tokens)
            cells = "█" * filled + "·" * (BAR_CELLS - filled)
            meter = f"{cells} {bar.tokens}/{bar.target_tokens} tok"
        else:
            meter = f"{bar.tokens} tok"
        room = self._width - len(position) - len(meter) - 4
        title = bar.title if len(bar.title) <= room else bar.title[: max(1, room - 1)] + "…"
        return f"{position} {title}  {meter}"

    def _draw(self, *, force: bool) -> None:
        if not self._live_bar or self._bar is None:
            return
        now = self._clock()
        if not force and now - self._last_draw < REDRAW_INTERVAL_S:
            return
        self._last_draw = now
        text = self._bar_text(self._bar)
        self._stream.write("\r" + text.ljust(self._drawn))
        self._stream.flush()
        self._drawn = len(text)

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
