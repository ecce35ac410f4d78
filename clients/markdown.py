"""Assembles a run's frames into the Markdown document (`# title`, `## section`, text) and
checks every section against its `text_sha256`. Frames in, text out to a sink: no network."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol


class TextSink(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def render_markdown(title: str, sections: list[tuple[str, str]]) -> str:
    """The whole document at once; what the assembler writes piece by piece."""
    return f"# {title}\n" + "".join(f"\n## {heading}\n\n{text}\n" for heading, text in sections)


def restart_notice(attempt: int) -> str:
    return (
        f"\n\n> **docgen:** the server retried this section (attempt {attempt}); "
        "discard its text above.\n"
    )


@dataclass
class _Section:
    title: str | None
    """None only if its `section_start` never arrived (a run log that lost its head)."""
    parts: list[str] = field(default_factory=list)
    written_chars: int = 0
    """Of its text, how much the output already holds from before the cursor (`already_through`)."""
    started_before_cursor: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class MarkdownAssembler:
    """`streaming=True` writes text as it arrives (stdout): a retried section gets a visible
    notice and starts over below it. `streaming=False` writes each section once, when it
    ends (a file), so the output never holds a discarded attempt.

    `already_through=N`: the output already holds everything up to seq N (a resumed `--output`
    file). The run is still read from seq 1, so every heading is known and every section is
    checked against its hash, but only what comes after N is written."""

    def __init__(
        self, sink: TextSink, *, title: str | None, streaming: bool, already_through: int = 0
    ) -> None:
        self._sink = sink
        self._title = title
        self._streaming = streaming
        self._cursor = already_through
        self._writing = already_through == 0
        self._sections: dict[str, _Section] = {}
        self._open: str | None = None
        self.committed_seq = 0
        """Every event up to this seq is fully in the sink: resuming after it (appending to
        the same output) neither loses nor repeats text."""
        self.mismatches: list[str] = []
        """One message per section whose assembled text does not match its `text_sha256`."""
        self.titles: dict[str, str] = {}
        """Section id -> title, as `section_start` announced them."""

    def feed(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        seq = frame.get("seq")
        self._writing = not isinstance(seq, int) or seq > self._cursor
        if kind == "run_started" and self._writing:
            title = self._title or frame.get("title") or frame["document_id"]
            self._emit(f"# {title}\n")
        elif kind == "section_start":
            self._start(frame)
        elif kind == "section_chunk":
            self._chunk(frame)
        elif kind == "section_end":
            self._end(frame)
        if isinstance(seq, int) and (self._streaming or self._open is None):
            self.committed_seq = seq

    def _start(self, frame: dict[str, Any]) -> None:
        section_id, title = frame["section_id"], frame["title"]
        restarted = section_id in self._sections
        previous = self._sections.get(section_id)
        self._sections[section_id] = _Section(title=title)
        self.titles[section_id] = title
        self._open = section_id
        if not self._writing:
            self._sections[section_id].started_before_cursor = True
            return
        if not self._streaming and previous is not None and previous.started_before_cursor:
            # The output holds the head of an attempt that is now void (written before the
            # cursor): say so, as a streamed retry does, and write the new attempt in full.
            self._emit(restart_notice(frame["attempt"]))
        if self._streaming:
            if restarted:
                self._emit(restart_notice(frame["attempt"]))
            self._emit(f"\n## {title}\n\n")

    def _chunk(self, frame: dict[str, Any]) -> None:
        section = self._section(frame["section_id"])
        section.parts.append(frame["delta"])
        if not self._writing:
            section.written_chars += len(frame["delta"])
        elif self._streaming:
            self._emit(frame["delta"])

    def _end(self, frame: dict[str, Any]) -> None:
        section_id = frame["section_id"]
        section = self._section(section_id)
        self._open = None
        text = section.text
        if not self._writing:
            pass
        elif self._streaming:
            self._emit("\n")
        elif section.started_before_cursor:
            self._emit(f"{text[section.written_chars :]}\n")
        else:
            self._emit(f"\n## {section.title}\n\n{text}\n")
        if section.title is None:
            self.mismatches.append(f"section {section_id!r}: its start is missing from the run")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest != frame["text_sha256"]:
            self.mismatches.append(
                f"section {section_id!r}: assembled {len(text)} chars with sha256 {digest[:12]}…, "
                f"the server wrote {frame['chars']} chars with sha256 {frame['text_sha256'][:12]}…"
            )

    def _section(self, section_id: str) -> _Section:
        section = self._sections.get(section_id)
        if section is None:
            section = self._sections[section_id] = _Section(title=None)
            self._open = section_id
        return section

    def _emit(self, text: str) -> None:
        self._sink.write(text)
        self._sink.flush()
