"""A streaming filter between the LLM and the client that drops what is not the section's text:
markup and template tags anywhere, and at the section's opening a preamble ("Here's a short
section on …:"), a heading or a line that repeats the document's or the section's title.

It holds back only text that could still turn out to be one of those: from a `<` (or a
look-alike: `＜`, `&lt;`, `&#60;`) until the tag closes or cannot be a tag any more, and at the
opening, a first line that could still be a preamble, a heading or a title until its end. The
rest is released at once, so a client sees what it would have seen, minus the scaffolding, and
what it assembles is exactly the section text the generator hashes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import regex

# Longest tag that is held back waiting for its `>`: long enough for the invented XML small
# models write (`<bldngr:title lang="en" xmlns="…">`), short enough that a stray `<` holds up
# little text.
MAX_TAG_CHARS = 160
# Openings dropped in a row at most (a preamble, then a heading, then a title line…).
MAX_OPENINGS = 4

# Invisible characters that could hide a tag from a plain `<` match (`<\u2060/brief>`); never
# needed in prose, so they are dropped wherever they occur.
_INVISIBLE = regex.compile(r"[\u200b\u2060\ufeff]")
_OPEN = r"(?:<|＜|﹤|&lt;|&#0*60;|&#[xX]0*3[cC];)"
_CLOSE = r"(?:>|＞|﹥|&gt;|&#0*62;|&#[xX]0*3[eE];)"
# A tag starts right after its `<` (so `a < b` in prose is not one): a name, a closing or
# processing mark, or a chat-template token such as `<|im_start|>`. A closing tag written with
# spaces (`< / summary >`) counts too: prose has no use for `< /`.
_TAG = regex.compile(
    rf"{_OPEN}(?:[/!?]?[^\W\d_]|\|[^|\n]{{1,40}}\||\s*/\s*[^\W\d_])"
    rf"[^<>＜＞﹤﹥\n]{{0,{MAX_TAG_CHARS}}}?{_CLOSE}"
)
_TAG_START = regex.compile(r"[<＜﹤&]")

# What a small model opens a section with instead of its text. Each alternative must end
# with the end of its line: the opening is decided when that line is complete.
_PREAMBLE = (
    r"(?:here(?:'s|’s| is| are)|sure|certainly|of course|okay|ok|below|the following|"
    r"in this (?:section|part)|this (?:section|part)|aquí|a continuación|claro|por supuesto|"
    r"en esta (?:sección|parte)|esta (?:sección|parte)|este apartado)\b[^\n]{0,240}:"
)
_HEADING = r"(?:#{1,6}[ \t][^\n]{0,300}|\[[^\]\n]{1,300}\]|\*\*[^*\n]{1,300}\*\*:?)"
# The request read back ('La parte "…" de un informe titulado…', "Write two paragraphs…").
_REQUEST_ECHO = (
    r"(?:(?:the |la )?(?:part|parte)[ \t]+[\"“”]|"
    r"(?:write|escribe)[ \t]+(?:one|two|three|four|un|dos|tres|cuatro)[ \t]+"
    r"(?:paragraphs?|párrafos?)\b)[^\n]{0,300}"
)
_BLANK = r"[ \t]*(?:\n|$)"


def _loose(title: str) -> str:
    """A title as a pattern that tolerates different spacing and case."""
    words = [regex.escape(w) for w in title.split()]
    return r"[ \t]+".join(words)


class ScaffoldingFilter:
    """Feed it the LLM's deltas in order; it returns what may go to the client now.

    Two stages: tags are taken out first, then the opening is judged on what is left (so
    `<summary>\nExecutive summary\n` at the top goes entirely)."""

    def __init__(self, titles: Sequence[str] = ()) -> None:
        titles = [t for t in dict.fromkeys(" ".join(t.split()) for t in titles) if t]
        title_alternatives = "|".join(_loose(t) for t in sorted(titles, key=len, reverse=True))
        echo = (
            rf"(?:(?:section|part|sección|parte)[ \t]+\d+[ \t]*[:.—–-][ \t]*)?"
            rf"[\"“”'*_]*(?:{title_alternatives})[\"“”'*_]*"
            if titles
            else None
        )
        line_openings = [_PREAMBLE, _HEADING, _REQUEST_ECHO] + (
            [echo + r"[ \t]*[:.—–-]?"] if echo else []
        )
        # A whole line, or a title followed by a colon and then the text on the same line
        # ("Raised beds: Raised beds warm up…"): the title and colon go, the text stays. Until
        # the stream ends, a line counts as complete only with its line break.
        self._openings = {
            final: regex.compile(
                rf"[ \t]*(?:(?:{'|'.join(line_openings)})[ \t]*(?:\n{'|$' if final else ''})"
                + (rf"|{echo}[ \t]*:[ \t]+(?=\S)" if echo else "")
                + ")",
                regex.IGNORECASE,
            )
            for final in (False, True)
        }
        self._tag_pending = ""
        self._pending = ""
        self._openings_left = MAX_OPENINGS
        self._at_opening = True
        self._skip_space = False
        self._released: list[str] = []
        self.dropped: list[str] = []
        """Everything dropped, in order (for logs and tests)."""

    @property
    def text(self) -> str:
        """Everything released so far."""
        return "".join(self._released)

    @property
    def holding(self) -> bool:
        """Whether some text is held back, undecided."""
        return bool(self._tag_pending or self._pending)

    def feed(self, delta: str) -> str:
        return self._release(self._open(self._untag(delta, final=False), final=False))

    def flush(self) -> str:
        """The end of the stream: what was held back and is not scaffolding is released."""
        return self._release(self._open(self._untag("", final=True), final=True))

    def _release(self, text: str) -> str:
        if text:
            self._released.append(text)
        return text

    def _untag(self, delta: str, *, final: bool) -> str:
        """Stage 1: the text with complete tags taken out; a possible tag start is held."""
        text = self._tag_pending + _INVISIBLE.sub("", delta)
        self._tag_pending = ""
        out: list[str] = []
        position = 0
        while True:
            found = _TAG_START.search(text, position)
            if found is None:
                out.append(self._after_tag(text[position:]))
                break
            start = found.start()
            out.append(self._after_tag(text[position:start]))
            match = _TAG.match(text, start, partial=not final)
            if match is None:
                out.append(self._after_tag(text[start]))  # a lone `<` or `&`: prose
                position = start + 1
            elif match.partial:
                self._tag_pending = text[start:]
                break
            else:
                self.dropped.append(text[start : match.end()])
                # "a <b>word</b> b" reads "a word b", not "a  word  b"; a tag alone on its
                # line takes its line break with it.
                before = "".join(out) or (self._released[-1] if self._released else "\n")
                self._skip_space = before[-1:] in ("", " ", "\t", "\n")
                position = match.end()
        return "".join(out)

    def _after_tag(self, text: str) -> str:
        if self._skip_space and text:
            stripped = text.lstrip(" \t")
            if stripped.startswith("\n"):
                stripped = stripped[1:]
            if stripped:
                self._skip_space = False
            return stripped
        return text

    def _open(self, text: str, *, final: bool) -> str:
        """Stage 2: drops opening scaffolding; holds the opening while it is undecided."""
        if not self._at_opening:
            return text
        self._pending += text
        opening = self._openings[final]
        while self._openings_left > 0:
            stripped = self._pending.lstrip()
            if not stripped:
                self._pending = ""
                return ""
            match = opening.match(stripped, partial=not final)
            if match is None or (match.end() == 0 and not match.partial):
                break
            if match.partial:
                return ""
            self.dropped.append(stripped[: match.end()])
            self._pending = stripped[match.end() :]
            self._openings_left -= 1
        released = self._pending.lstrip()
        self._pending = ""
        if released:
            self._at_opening = False
        return released


def normalized(text: str) -> str:
    """Text compared loosely: NFKC (`＜` is `<`), invisible characters removed."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
