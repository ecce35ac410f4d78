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
