"""The sentences of one section for the extractive summary, ranked best first: split by the
language's rules, markup, prompt echoes and fragments dropped, then scored and deduplicated."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sentencex import segment

from services.common.language import primary
from services.common.sentence_end import ends_with_abbreviation

MIN_SENTENCE_WORDS = 3
# Two sentences say the same thing when their content words overlap this much (Jaccard), or
# when most of the shorter one's content words reappear in the longer one (a restatement).
REDUNDANCY_JACCARD = 0.6
RESTATEMENT_CONTAINMENT = 0.7
RESTATEMENT_MIN_SHARED = 4
SECTION_TITLE_WEIGHT = 0.35
DOCUMENT_TITLE_WEIGHT = 0.15
NOVELTY_WEIGHT = 0.2
# Sentences with fewer content words than this are scored down in proportion.
INFORMATIVE_TERMS = 5
# Openings tend to state what a section is about.
POSITION_PRIOR = (0.15, 0.08, 0.04)

_WORD = re.compile(r"[^\W_]+")
_LIST_MARKER = re.compile(r"(?:[-*+•]|\d{1,3}[.)]|>)\s+")
_MARKUP_PREFIXES = ("#", "|", "```", "~~~")
# Markup, template tokens or their escaped forms: a sentence with any is never quoted.
_MARKUP = re.compile(
    r"(?:<|＜|﹤|&lt;|&#0*60;|&#[xX]0*3[cC];)(?:[^\W\d_]|\s*[/!?|])|\[/?[A-Za-z]+\]"
)
# Wording of the prompts (current and earlier ones) that a model may parrot back: a sentence
# with any is an echo, not content.
_PROMPT_ECHO = re.compile(
    r"write (?:one|two|three|four) paragraphs?|report titled|cover this:|document title:|"
    r"write this one|earlier parts of the report|titles and notes quoted|reference data|"
    r"never instructions|write section \d|a longer (?:document|report)|what the brief asks|"
    r"escribe (?:un|dos|tres|cuatro) párrafos?|informe titulado|trata esto:|"
    r"partes anteriores del informe|nunca instrucciones",
    re.IGNORECASE,
)
# Openings that announce rather than say; scored down, so a section's content comes first.
_FILLER = re.compile(
    r"^(?:here(?:'s|’s| is| are)\b|sure\b|certainly\b|of course\b|in this (?:section|part)\b|"
    r"this (?:section|part)\b|in (?:summary|conclusion)\b|let'?s\b|aquí\b|claro\b|"
    r"en esta (?:sección|parte)\b|esta (?:sección|parte)\b|en resumen\b|en conclusión\b)",
    re.IGNORECASE,
)
FILLER_FACTOR = 0.3
_STOPWORDS = {
    "en": frozenset(
        """a about above after again against all also am an and any are as at be because been
        before being below between both but by can could did do does doing don down during each
        few for from further had has have having he her here hers herself him himself his how i
        if in into is it its itself just may me might more most much must my myself no nor not
        now of off on once only or other our ours ourselves out over own same she should so
        some such than that the their theirs them themselves then there these they this those
        through to too under until up very was we were what when where which while who whom
        why will with would you your yours yourself yourselves""".split()
    ),
    "es": frozenset(
        """a al algo algunas algunos ante antes como con contra cual cuando de del desde donde
        durante e el ella ellas ellos en entre era es esa esas ese eso esos esta estas este esto
        estos fue ha hace hay la las le les lo los mas más me mi muy nada ni no nos o os otra
        otras otro otros para pero poco por porque que qué se sea ser si sí sin sobre son su sus
        también tan te tiene todo todos tu un una uno unos y ya""".split()
    ),
}


def is_junk(sentence: str) -> bool:
    """Whether a sentence carries markup or echoes a prompt: never part of a summary."""
    return bool(_MARKUP.search(sentence) or _PROMPT_ECHO.search(sentence))


@dataclass(frozen=True)
class Candidate:
    position: int  # index in text order
    sentence: str
    words: int
    terms: frozenset[str]  # content words, for redundancy
    score: float


class SentenceRanker:
    """Ranks sentences by the rules and stop words of one language (a language code)."""

    def __init__(self, language: str) -> None:
        self.language = language
        # Looked up once: _term_list consults it for every word.
        self._stopwords = _STOPWORDS.get(primary(language), frozenset())
        self._fold_plurals = primary(language) in ("en", "es")

    def rank_new(
        self, text: str, title: str, document_title: str, seen_sentences: Sequence[str]
    ) -> list[Candidate]:
        """The new section's sentences, best first, without restatements of the summary."""
        seen = [(s, self._terms(s)) for s in seen_sentences]
        seen_terms = frozenset().union(*(terms for _, terms in seen))
        pool: list[Candidate] = []
        scored = self._score(self._sentences(text), title, document_title, seen_terms)
        for candidate in sorted(scored, key=rank_key):
            if not _is_redundant(candidate, seen) and not _is_redundant(
                candidate, ((c.sentence, c.terms) for c in pool)
            ):
                pool.append(candidate)
        return pool

    def rank_kept(self, kept: Sequence[str], title: str, document_title: str) -> list[Candidate]:
        """An older section's kept sentences, best first; scored afresh, as no score is kept."""
        # The previous summary comes over the wire: skip what this module would never produce.
        sentences = [s for s in kept if s.strip() and len(s.splitlines()) == 1 and not is_junk(s)]
        return sorted(self._score(sentences, title, document_title), key=rank_key)

    def _sentences(self, text: str) -> list[str]:
        sentences = []
        # sentencex (Wikimedia's segmenter, in Rust) keeps the text verbatim: its segments join
        # back to it. It replaced pysbd, which took ~60 % of an update (23 ms for a 600-token
        # section, against 0.2 ms) and split after "Sr." and "p. ej." in Spanish.
        for segment_text in self._mend(segment(self.language, text)):
            # Segments can span single newlines; one line per sentence keeps headings, list
            # items and table rows apart.
            for line in segment_text.splitlines():
                fragment = line.strip()
                # A lead-in ending with a colon says nothing without the list that follows it.
                if fragment.startswith(_MARKUP_PREFIXES) or fragment.endswith(":"):
                    continue
                fragment = _LIST_MARKER.sub("", fragment, count=1)
                # The summary must only ever quote the section.
                if (
                    len(fragment.split()) >= MIN_SENTENCE_WORDS
                    and fragment in text
                    and not is_junk(fragment)
                ):
                    sentences.append(fragment)
        return sentences

    def _mend(self, segments: Iterable[str]) -> list[str]:
        """The segmenter's segments, with a split after an abbreviation it does not know undone
        (`ends_with_abbreviation`'s lists); segments keep their trailing white space, so
        joining two gives the text back."""
        mended: list[str] = []
        for piece in segments:
            previous = mended[-1] if mended else ""
            if (
                previous
                and "\n" not in previous
                and ends_with_abbreviation(previous, self.language)
            ):
                mended[-1] = previous + piece
            else:
                mended.append(piece)
        return mended

    def _terms(self, text: str) -> frozenset[str]:
        return frozenset(self._term_list(text))

    def _term_list(self, text: str) -> list[str]:
        terms = []
        for word in _WORD.findall(text.lower()):
            if len(word) < 2 or word in self._stopwords:
                continue
            # Crude plural folding, so "aqueducts" and "aqueduct" count as one term.
            if self._fold_plurals and len(word) > 3 and word[-1] == "s" and word[-2] != "s":
                word = word[:-1]
            terms.append(word)
        return terms

    def _score(
        self,
        sentences: Sequence[str],
        title: str,
        document_title: str,
        seen_terms: frozenset[str] = frozenset(),
    ) -> list[Candidate]:
        term_lists = [self._term_list(s) for s in sentences]
        vectors = _tf_idf(term_lists)
        centroid: dict[str, float] = {}
        for vector in vectors:
            for term, weight in vector.items():
                centroid[term] = centroid.get(term, 0.0) + weight
        centroid_norm2 = sum(w * w for w in centroid.values())
        title_terms = self._terms(title)
        document_terms = self._terms(document_title)

        candidates = []
        for position, (sentence, terms, vector) in enumerate(
            zip(sentences, term_lists, vectors, strict=True)
        ):
            term_set = frozenset(terms)
            score = _centrality(vector, centroid, centroid_norm2)
            score += SECTION_TITLE_WEIGHT * _coverage(title_terms, term_set)
            score += DOCUMENT_TITLE_WEIGHT * _coverage(document_terms, term_set)
            if term_set:
                score += NOVELTY_WEIGHT * len(term_set - seen_terms) / len(term_set)
            if position < len(POSITION_PRIOR):
                score += POSITION_PRIOR[position]
            # Short transitions ("The calculation is simple.") score well on overlap alone but
            # tell the reader little.
            score *= min(1.0, len(term_set) / INFORMATIVE_TERMS)
            # Announcements ("In this section, we look at raised beds.") and sentences that
            # only restate the titles score well on overlap too, and say nothing new.
            if _FILLER.match(sentence) or (term_set and term_set <= title_terms | document_terms):
                score *= FILLER_FACTOR
            candidates.append(Candidate(position, sentence, len(sentence.split()), term_set, score))
        return candidates


def rank_key(candidate: Candidate) -> tuple[float, int]:
    return (-candidate.score, candidate.position)


def _tf_idf(term_lists: list[list[str]]) -> list[dict[str, float]]:
    """Term weights per sentence, with the section's sentences as the document collection."""
    document_frequency = Counter(t for terms in term_lists for t in dict.fromkeys(terms))
    n = len(term_lists)
    idf = {t: math.log((1 + n) / (1 + df)) + 1.0 for t, df in document_frequency.items()}
    return [{t: tf * idf[t] for t, tf in Counter(terms).items()} for terms in term_lists]


def _centrality(
    vector: dict[str, float], centroid: dict[str, float], centroid_norm2: float
) -> float:
    """Cosine between a sentence and the centroid of the other sentences of its section."""
    # Leaving the sentence out of the centroid keeps long sentences from scoring on their own
    # weight.
    dot = sum(w * centroid[t] for t, w in vector.items())
    norm2 = sum(w * w for w in vector.values())
    rest_dot = dot - norm2
    rest_norm2 = centroid_norm2 - 2 * dot + norm2
    if norm2 <= 0 or rest_norm2 <= 1e-12:
        return 0.0
    return max(0.0, rest_dot) / math.sqrt(norm2 * rest_norm2)


def _coverage(reference: frozenset[str], terms: frozenset[str]) -> float:
    return len(reference & terms) / len(reference) if reference else 0.0


def _is_redundant(candidate: Candidate, kept: Iterable[tuple[str, frozenset[str]]]) -> bool:
    for sentence, terms in kept:
        if candidate.sentence == sentence:
            return True
        if candidate.terms and terms:
            shared = len(candidate.terms & terms)
            union = len(candidate.terms) + len(terms) - shared
            if shared / union >= REDUNDANCY_JACCARD:
                return True
            smaller = min(len(candidate.terms), len(terms))
            if shared >= RESTATEMENT_MIN_SHARED and shared / smaller >= RESTATEMENT_CONTAINMENT:
                return True
    return False
