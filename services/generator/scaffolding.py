"""A streaming filter between the LLM and the client that drops what is not the section's text:
markup and template tags anywhere, label lines ("Title: …") anywhere, and at the section's
opening a preamble ("Here's a short section on …:", in any language: a short first line
ending with a colon), a heading, a line
that repeats the document's or the section's title (or the section's brief), or a first
sentence that reads the request back ('The report titled "…" is about…').

It holds back only text that could still turn out to be one of those: from a `<` (or a
look-alike: `＜`, `&lt;`, `&#60;`) until the tag closes or cannot be a tag any more, and at the
opening, a first line until it can no longer be a preamble, a heading or a title (its first
sentence end, its line break, or MAX_PREAMBLE_CHARS), and a first sentence that opens like the
request read back until that sentence ends (at most MAX_ECHO_SENTENCE_CHARS). The rest is
released at once, so a client sees what it would have seen, minus the scaffolding, and what it
assembles is exactly the section text the generator hashes.
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
# A first line of at most this many characters, with no sentence end in it, that ends with a
# colon and a line break is a preamble, whatever its language ("Dos párrafos en español para el
# siguiente:", "Voici la section :"). The price: a section that really opens with such a line
# ("Key points:" before a list) loses that line, and the first sentence of every section is held
# back until its end (or this many characters) because until then it could be such a line.
MAX_PREAMBLE_CHARS = 160
# A first sentence that reads the request back is held until it ends, at most this many
# characters after the echo; a longer one is released as it is.
MAX_ECHO_SENTENCE_CHARS = 400

# Invisible characters that could hide a tag from a plain `<` match (`<\u2060/brief>`); never
# needed in prose, so they are dropped wherever they occur.
_INVISIBLE_CHARS = "\u200b\u2060\ufeff"
_INVISIBLE = regex.compile(f"[{_INVISIBLE_CHARS}]")
_OPEN = r"(?:<|＜|﹤|&lt;|&#0*60;|&#[xX]0*3[cC];)"
_CLOSE = r"(?:>|＞|﹥|&gt;|&#0*62;|&#[xX]0*3[eE];)"
# A tag starts right after its `<` (so `a < b` in prose is not one): a name, a closing or
# processing mark, or a chat-template token such as `<|im_start|>`. A closing tag written with
# spaces (`< / summary >`) counts too: prose has no use for `< /`.
_TAG = regex.compile(
    rf"{_OPEN}(?:[/!?]?[^\W\d_]|\|[^|\n]{{1,40}}\||\s*/\s*[^\W\d_])"
    rf"[^<>＜＞﹤﹥\n]{{0,{MAX_TAG_CHARS}}}?{_CLOSE}"
)
_TAG_START_CHARS = "<＜﹤&"
_TAG_START = regex.compile(f"[{_TAG_START_CHARS}]")
# Characters that send a delta through the regular expressions of stage 1: a tag start or an
# invisible character. Most deltas hold none, and the two `regex` calls per delta were ~7 % of
# the generator's CPU per token at 100 streams (py-spy, docs/performance.md).
_STAGE_1_CHARS = tuple(_TAG_START_CHARS + _INVISIBLE_CHARS)

# What a small model opens a section with instead of its text. Each alternative must end
# with the end of its line: the opening is decided when that line is complete.
_PREAMBLE = (
    r"(?:here(?:'s|’s| is| are)|sure|certainly|of course|okay|ok|below|the following|"
    r"in this (?:section|part)|this (?:section|part)|aquí|a continuación|claro|por supuesto|"
    r"en esta (?:sección|parte)|esta (?:sección|parte)|este apartado)\b[^\n]{0,240}:"
)
_COLON_LINE = rf"[^\n.!?…]{{1,{MAX_PREAMBLE_CHARS}}}[:：]"
_HEADING = r"(?:#{1,6}[ \t][^\n]{0,300}|\[[^\]\n]{1,300}\]|\*\*[^*\n]{1,300}\*\*:?)"
# The request read back as a line of its own ("Write two paragraphs in English for…").
_REQUEST_ECHO = (
    r"(?:write|escribe)[ \t]+(?:one|two|three|four|un|dos|tres|cuatro)[ \t]+"
    r"(?:paragraphs?|párrafos?)\b[^\n]{0,300}"
)
_BLANK = r"[ \t]*(?:\n|$)"
# A first line that labels what follows ("Title: Executive Summary", "Título: Riego"), whatever
# follows the label: the model restating a title it was given, or inventing one. Prose does not
# open a section with such a line.
_LABEL_LINE = (
    r"(?:title|subtitle|heading|section title|título|subtítulo|encabezado)[ \t]*[:：][^\n]{0,200}"
)
# The same label lines later in a section ("Title: …" / "Subtitle: …" between two paragraphs,
# seen on the bundled model): dropped wherever a line starts with one.
# Until the stream ends a line is complete only with its line break (a partial match would
# take `$` for the end of the line).
_LABEL_AT_LINE_START = {
    final: regex.compile(rf"[ \t]*{_LABEL_LINE}(?:\n{'|$' if final else ''})", regex.IGNORECASE)
    for final in (False, True)
}

# The request read back as the subject or an adverbial of the first sentence: 'The report
# titled "…" is about…', 'La parte "…" de un informe titulado "…" es…', 'In the report titled
# "…", …'. A clause that quotes only one thing (group `named`) counts only when that is a title
# of this document or section: 'the report "Cycling in Cities"' may be prose about another
# report; 'the part "…" of a report titled "…"' never is. The pattern does not depend on the
# titles (they are checked afterwards), so it is compiled once: a pattern with the titles in it
# would be compiled again for every section, on the event loop.
_W = r"[ \t]+"
_QUOTED = r"[\"“”«„][^\"“”«»„\n]{1,200}[\"“”»]"
_NAMED = r"[\"“”«„](?P<named>[^\"“”«»„\n]{1,200})[\"“”»]"
_ECHO_LEAD = rf"(?P<lead>(?:in|for|about|within|on|en|para|sobre|dentro{_W}de){_W})?"
_EN_PART = rf"(?:the|this|a){_W}(?:part|section){_W}(?:(?:titled|called|named|on){_W})?"
_ES_PART = rf"(?:la|esta|una){_W}(?:parte|sección){_W}(?:(?:titulada|llamada|sobre){_W})?"
_ECHO = (
    "(?:"
    # the part "…" of the report titled "…"; la parte "…" de un informe titulado "…"
    rf"{_EN_PART}{_QUOTED},?{_W}(?:of|in|from){_W}(?:the|a|this){_W}(?:report|document)"
    rf"(?:{_W}(?:titled|called|named|entitled))?,?{_W}{_QUOTED}"
    rf"|{_ES_PART}{_QUOTED},?{_W}(?:de{_W}(?:un|el|este)|del){_W}(?:informe|documento)"
    rf"(?:{_W}(?:titulado|llamado))?,?{_W}{_QUOTED}"
    # the part "<title>", the report titled "<title>"; la parte "<title>", el informe "<title>"
    rf"|(?:{_EN_PART}|(?:the|this|a){_W}(?:report|document){_W}"
    rf"(?:(?:titled|called|named|entitled){_W})?|{_ES_PART}|(?:el|este|un){_W}"
    rf"(?:informe|documento){_W}(?:(?:titulado|llamado){_W})?){_NAMED}"
    ")"
)


def _echo_sentence(*, final: bool) -> regex.Pattern[str]:
    """After a leading adverbial ('In the report titled "…", …') or a colon, the rest of the
    sentence is a clause of its own and stays (group `keep`: its first letter is capitalised);
    after an echo that is the sentence's subject ('The report titled "…" is about…') the rest
    cannot stand alone, so the whole sentence goes."""
    sentence_end = r"[.!?…]+(?:[ \t]+|(?=\n)" + ("|$)" if final else ")") + r"|(?=\n)"
    return regex.compile(
        rf"[ \t]*{_ECHO_LEAD}{_ECHO}"
        rf"(?:(?(lead)[ \t]*[,:：]|[ \t]*[:：])[ \t]+(?=\S)(?P<keep>)"
        rf"|[^\n]{{0,{MAX_ECHO_SENTENCE_CHARS}}}?(?:{sentence_end}))",
        regex.IGNORECASE,
    )


_ECHO_SENTENCE = {final: _echo_sentence(final=final) for final in (False, True)}


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


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
        line_openings = [_PREAMBLE, _HEADING, _REQUEST_ECHO, _LABEL_LINE, _COLON_LINE] + (
            [echo + r"[ \t]*[:.—–-]?"] if echo else []
        )
        # A whole line, or a title followed by a colon and then the text on the same line
        # ("Raised beds: Raised beds warm up…"): the title and colon go, the text stays; or a
        # first sentence that reads the request back. Until the stream ends, a line counts as
        # complete only with its line break.
        self._openings = {
            final: regex.compile(
                rf"[ \t]*(?:(?:{'|'.join(line_openings)})[ \t]*(?:\n{'|$' if final else ''})"
                + (rf"|{echo}[ \t]*:[ \t]+(?=\S)" if echo else "")
                + ")",
                regex.IGNORECASE,
            )
            for final in (False, True)
        }
        self._titles = {_folded(t) for t in titles}
        self._tag_pending = ""
        self._pending = ""
        self._openings_left = MAX_OPENINGS
        self._at_opening = True
        self._skip_space = False
        self._released: list[str] = []
        self._line_pending = ""
        self.dropped: list[str] = []
        """Everything dropped, in order (for logs and tests)."""

    @property
    def text(self) -> str:
        """Everything released so far."""
        return "".join(self._released)

    @property
    def holding(self) -> bool:
        """Whether some text is held back, undecided."""
        return bool(self._tag_pending or self._pending or self._line_pending)

    def feed(self, delta: str) -> str:
        text = self._open(self._untag(delta, final=False), final=False)
        return self._release(self._unlabel(text, final=False))

    def flush(self) -> str:
        """The end of the stream: what was held back and is not scaffolding is released."""
        text = self._open(self._untag("", final=True), final=True)
        return self._release(self._unlabel(text, final=True))

    def _unlabel(self, text: str, *, final: bool) -> str:
        """Stage 3, after the opening: drops label lines ("Title: …"); holds the start of a
        line only while it could still be one (a few characters, or up to its line break)."""
        # Held text starts a line; else the next text does when the last released ended one.
        at_line_start = bool(self._line_pending) or (
            bool(self._released) and self._released[-1].endswith("\n")
        )
        if not at_line_start and "\n" not in text:
            return text  # the common delta: inside a line
        text = self._line_pending + text
        self._line_pending = ""
        out: list[str] = []
        position = 0
        while position < len(text):
            if at_line_start:
                match = _LABEL_AT_LINE_START[final].match(text, position, partial=not final)
                if match is not None and match.partial:
                    self._line_pending = text[position:]
                    break
                if match is not None:
                    self.dropped.append(text[position : match.end()])
                    position = match.end()
                    continue
            newline = text.find("\n", position)
            end = len(text) if newline < 0 else newline + 1
            out.append(text[position:end])
            position = end
            at_line_start = newline >= 0
        return "".join(out)

    def _release(self, text: str) -> str:
        if text:
            self._released.append(text)
        return text

    def _untag(self, delta: str, *, final: bool) -> str:
        """Stage 1: the text with complete tags taken out; a possible tag start is held."""
        if not self._tag_pending and not any(c in delta for c in _STAGE_1_CHARS):
            return self._after_tag(delta)
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
        while self._openings_left > 0:
            stripped = self._pending.lstrip()
            if not stripped:
                self._pending = ""
                return ""
            matches = [
                match
                for match in (
                    self._openings[final].match(stripped, partial=not final),
                    self._echo_sentence(stripped, final=final),
                )
                if match is not None and (match.end() > 0 or match.partial)
            ]
            match = next((m for m in matches if not m.partial), None)
            if match is None:
                if matches:
                    return ""  # could still be an opening: held
                break
            self.dropped.append(stripped[: match.end()])
            self._pending = stripped[match.end() :]
            if "keep" in match.re.groupindex and match.group("keep") is not None:
                # 'In the report titled "…", cities…' goes on as 'Cities…'.
                self._pending = self._pending[:1].upper() + self._pending[1:]
            self._openings_left -= 1
        released = self._pending.lstrip()
        self._pending = ""
        if released:
            self._at_opening = False
        return released

    def _echo_sentence(self, text: str, *, final: bool) -> regex.Match[str] | None:
        """A first sentence that reads the request back (partial while it could still be one);
        a clause that quotes one thing only counts when that thing is one of our titles."""
        match = _ECHO_SENTENCE[final].match(text, partial=not final)
        if match is None or match.partial or match.group("named") is None:
            return match
        return match if _folded(match.group("named")).rstrip(".,") in self._titles else None


def normalized(text: str) -> str:
    """Text compared loosely: NFKC (`＜` is `<`), invisible characters removed."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
