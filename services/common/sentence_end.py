"""Where a sentence ends, cheaply: the generator ends a section at the first sentence end past
its target, and the summarizer mends the segmenter's splits after abbreviations it misses ("Sr.",
"p. ej." in Spanish).

Decided on the text so far plus the first character of what follows (a sentence has ended only
when what follows its full stop is a space or a line break: "3.5", "e.g." and "p. ej." are not
ends), without a sentence splitter per token.
"""

from __future__ import annotations

import re

from services.common.language import primary

# Words that end with a full stop but rarely end a sentence, by primary language subtag
# (lower case, without the final dot).
ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "e.g i.e mr mrs ms dr prof st vs approx fig no nos vol cf al inc ltd jr sr".split()
    ),
    "es": frozenset(
        "sr sra srta sres dr dra ej p. ej p.ej núm pág ud uds art aprox vol cap av dpto".split()
    ),
    "pt": frozenset("sr sra dr dra ex p. ex pág art aprox vol cap av".split()),
    "fr": frozenset("m mme mlle dr p. ex ex av vol art chap env".split()),
    "de": frozenset("z. b z.b bzw ca dr hr fr nr vgl usw".split()),
}

# A sentence terminator, then closing quotes or brackets, at the very end of the text.
_END = re.compile(r"[.!?…。！？][\"'”’»)\]*_]*$")
_LAST_WORD = re.compile(r"(\S+?)[.!?…。！？][\"'”’»)\]*_]*$")
# "1." or "a)" alone at the start of a line: a list marker, not the end of a sentence.
_LIST_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}|[A-Za-z])\.$")


def ends_sentence(text: str, next_text: str, language: str = "en") -> bool:
    """Whether `text` ends with a complete sentence, given that `next_text` follows it."""
    stripped = text.rstrip()
    # The end of a sentence shows once white space follows it, in the text or the next delta.
    if stripped == text and not next_text[:1].isspace():
        return False
    return bool(_END.search(stripped)) and not _abbreviated(stripped, language)


def ends_with_abbreviation(text: str, language: str = "en") -> bool:
    """Whether `text` ends with an abbreviation, an initial or a list marker rather than a
    sentence (trailing white space ignored)."""
    return _abbreviated(text.rstrip(), language)


def _abbreviated(text: str, language: str) -> bool:
    if _LIST_MARKER.search(text):
        return True
    if not text.endswith("."):
        return False
    match = _LAST_WORD.search(text)
    if match is None:
        return False
    word = match.group(1).lower().lstrip("(\"'“‘¿¡")
    # Single letters are initials ("J. R. R. Tolkien").
    if len(word) == 1 and word.isalpha():
        return True
    # Two-word abbreviations ("p. ej."): look at the last two words too.
    tail = text[:-1].lower().split()
    last_two = " ".join(tail[-2:]) if len(tail) >= 2 else word
    known = ABBREVIATIONS.get(primary(language), frozenset()) | ABBREVIATIONS["en"]
    return word in known or last_two in known


class SentenceStop:
    """Ends a stream at the first sentence end once `target_tokens` have been produced."""

    def __init__(self, target_tokens: int, language: str = "en") -> None:
        self.target_tokens = target_tokens
        self.language = language

    def should_stop(self, produced_tokens: int, text: str, next_delta: str) -> bool:
        """Whether to end before `next_delta`, after `produced_tokens` tokens gave `text`."""
        return produced_tokens >= self.target_tokens and ends_sentence(
            text, next_delta, self.language
        )


HOLD_FROM_SHARE = 0.9
"""Share of the target past which a section's text is released a whole sentence at a time."""
MAX_HELD_CHARS = 600
"""A run-on longer than this (~150 tokens, a few seconds of writing) goes out up to its last
white space without waiting for its end: held text is bounded, and a reader never waits long."""
_CONTEXT_CHARS = 80
"""Text before a candidate boundary that is enough to tell a sentence end (`ends_sentence`)."""


class SentenceTail:
    """Near its target, a section's text goes out a whole sentence (or line) at a time, so a
    section the LLM cuts at its hard cap (`max_tokens`, finish reason `length`) ends after its
    last whole sentence instead of mid-word ("... el que quierá ahor", seen on the bundled
    model). Before `hold_from_tokens` every delta goes out as it comes; past it, text waits
    until a sentence end or a line break follows it. The cost is confined to the end of a
    section: its last sentences arrive whole rather than token by token."""

    def __init__(self, hold_from_tokens: int, language: str = "en") -> None:
        self.hold_from_tokens = hold_from_tokens
        self.language = language
        self._held: list[str] = []
        self._held_chars = 0
        self._context = ""
        """The last `_CONTEXT_CHARS` of the text written so far (released and held)."""
        self._released_any = False
        self._at_boundary = False
        """Whether the text released so far ends at a sentence end or a line break."""

    @property
    def held(self) -> str:
        return "".join(self._held)

    @property
    def written(self) -> str:
        """The end of the text written so far, released or held (what `SentenceStop` reads)."""
        return self._context

    def feed(self, produced_tokens: int, text: str) -> str:
        """What of `text` (and of what was held before it) to release now."""
        context = self._context
        self._context = (context + text)[-_CONTEXT_CHARS:]
        if produced_tokens < self.hold_from_tokens and not self._held:
            # Whether it ends at a boundary matters only if the hold that follows finds none.
            last = text[-1:]
            boundary = last == "\n" or (
                last.isspace() and ends_sentence((context + text).rstrip(), last, self.language)
            )
            self._released(text, at_boundary=boundary)
            return text
        # Only positions inside the new text can be boundaries: the held text has none.
        for position in range(len(text) - 1, -1, -1):
            char = text[position]
            if char == "\n" or (
                char.isspace() and ends_sentence(context + text[:position], char, self.language)
            ):
                # The white space stays held: a section cut after this ends on its full stop.
                released = self._take() + text[:position]
                self._hold(text[position:])
                self._released(released, at_boundary=True)
                return released
        self._hold(text)
        if self._held_chars <= MAX_HELD_CHARS:
            return ""
        held = self._take()
        cut_at = _last_space(held)
        released, rest = (held[:cut_at], held[cut_at:]) if cut_at > 0 else (held, "")
        self._hold(rest)
        self._released(released, at_boundary=False)
        return released

    def _hold(self, text: str) -> None:
        if text:
            self._held.append(text)
            self._held_chars += len(text)

    def _take(self) -> str:
        held = "".join(self._held)
        self._held.clear()
        self._held_chars = 0
        return held

    def _released(self, text: str, *, at_boundary: bool) -> None:
        if text:
            self._released_any = True
            self._at_boundary = at_boundary
        elif at_boundary:
            self._at_boundary = self._released_any

    def finish(self, *, cut: bool) -> str:
        """What is left to release when the stream ends. A natural end (`cut` False) releases
        everything held. A cut at the hard cap drops the unfinished sentence if the text
        released so far ends a sentence; otherwise (no sentence ended since the hold began)
        it releases the held text up to its last white space, so the section at least ends
        on a whole word."""
        held = self._take()
        if not cut:
            return held
        if self._at_boundary:
            return ""
        cut_at = _last_space(held)
        return held[:cut_at].rstrip() if cut_at > 0 else ""


def _last_space(text: str) -> int:
    """The index of the last white space in `text` (-1 without one)."""
    return max(text.rfind(" "), text.rfind("\t"), text.rfind("\n"))
