"""Extractive fast path of the global summary: keeps verbatim sentences of every section so far,
re-balanced after each section so the whole summary stays within a word budget.

How one `update` works:

1. The new section is split into sentences with pysbd, by the rules of the document's language
   ("Sr." and "p. ej." do not end a Spanish sentence); markdown headings, table rows, lead-ins
   ending with a colon, fragments under three words, and sentences that carry markup or echo a
   prompt ("<summary>", "Write two paragraphs…", "Here's a…") are dropped, list markers are
   cut off (what is left is still a verbatim substring of the section).
2. Each sentence is scored: TF-IDF cosine to the rest of the section (centrality), overlap
   with the section title and the document title, novelty against the summary so far, and a
   small prior for the first sentences; sentences with few content words, filler openings
   ("In this section, …") and sentences that only restate the titles are scored down.
3. Best first, a sentence joins the section's pool unless it is (nearly) the same as one
   already in the pool or anywhere in the previous summary (Jaccard over content words, or a
   shorter sentence mostly contained in a longer one).
4. Older sections keep only what the previous summary holds; their kept sentences are
   re-scored the same way, so they can only shrink.
5. The budget is re-allocated over all sections: one sentence each first (its best one within
   an equal share of the budget, sized for at least PLANNED_SECTIONS sections), then the rest is
   shared with geometrically more weight on recent sections; sentences are shown in text order.

When the budget is too small for one sentence per section: every section falls back to its
shortest sentence (the highest-ranked among equally short ones); if that still does not fit,
the oldest sections are reduced to their title alone, one by one, until it does. Titles are
never cut, so the text exceeds the budget only when the titles alone exceed it.

A section with no usable sentence (empty text, only headings, or only sentences already in the
summary) renders as its title alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pysbd

from services.common.language import primary, sentence_rules
from services.common.sentence_end import ends_with_abbreviation

MIN_SENTENCE_WORDS = 3
# Two sentences say the same thing when their content words overlap this much (Jaccard), or
# when most of the shorter one's content words reappear in the longer one (a restatement).
REDUNDANCY_JACCARD = 0.6
RESTATEMENT_CONTAINMENT = 0.7
RESTATEMENT_MIN_SHARED = 4
# Outlines usually have 6 to 12 sections; see _allocate.
PLANNED_SECTIONS = 10
# Weight of section i of n in the budget share is RECENCY_DECAY ** (n - 1 - i).
RECENCY_DECAY = 0.6
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
class SectionDigest:
    """What the summary keeps of one section."""

    section_id: str
    title: str
    sentences: tuple[str, ...]  # verbatim sentences of the section, in text order


@dataclass(frozen=True)
class Summary:
    """The global summary of the document so far, one digest per section in document order."""

    sections: tuple[SectionDigest, ...] = ()

    @property
    def text(self) -> str:
        """One line per section, `Title: sentence sentence`; shown to users and put into prompts."""
        return "\n".join(_render_line(d.title, d.sentences) for d in self.sections)

    def word_count(self) -> int:
        return len(self.text.split())


def _one_line(title: str) -> str:
    # A title with a line break would break the one-line-per-section rendering, and stray
    # spaces around it would throw off the word count by a lone ":".
    return " ".join(title.split())


def _render_line(title: str, sentences: Sequence[str]) -> str:
    # Built so that its word count is exactly words(title) + words(sentences): the budget
    # arithmetic in _allocate relies on it.
    if not sentences:
        return title
    body = " ".join(sentences)
    return f"{title}: {body}" if title else body


@dataclass(frozen=True)
class _Candidate:
    position: int  # index in text order
    sentence: str
    words: int
    terms: frozenset[str]  # content words, for redundancy
    score: float


class ExtractiveSummarizer:
    """Pure, deterministic and stateless: the previous `Summary` is all the memory it has."""

    def __init__(self, budget_words: int = 250, language: str = "en") -> None:
        if budget_words < 1:
            raise ValueError(f"budget_words must be at least 1, got {budget_words}")
        pysbd.Segmenter(language=language, clean=False)  # fails now on an unknown language
        self.budget_words = budget_words
        self.language = language

    def _for_language(self, language: str | None) -> ExtractiveSummarizer:
        """This summarizer with the sentence rules and stop words of `language` (a BCP 47 tag
        of the document; None: the configured default)."""
        if not language:
            return self
        rules = sentence_rules(language)
        if rules == self.language:
            return self
        return ExtractiveSummarizer(self.budget_words, rules)

    @property
    def _stopwords(self) -> frozenset[str]:
        return _STOPWORDS.get(primary(self.language), frozenset())

    def update(
        self,
        previous: Summary,
        *,
        section_id: str,
        title: str,
        text: str,
        document_title: str = "",
        language: str | None = None,
    ) -> Summary:
        """Returns `previous` with the section `section_id` added, or replaced in place when the
        section is already there (a retried section), and the budget re-allocated. `language`
        (BCP 47) chooses the sentence rules; None keeps the summarizer's own."""
        if language and sentence_rules(language) != self.language:
            return self._for_language(language).update(
                previous,
                section_id=section_id,
                title=title,
                text=text,
                document_title=document_title,
            )
        others = [
            SectionDigest(d.section_id, _one_line(d.title), d.sentences)
            for d in previous.sections
            if d.section_id != section_id
        ]
        index = next(
            (i for i, d in enumerate(previous.sections) if d.section_id == section_id),
            len(others),
        )
        title = _one_line(title)
        digests = [*others[:index], SectionDigest(section_id, title, ()), *others[index:]]
        pools = [self._rank_kept(d, document_title) for d in others]
        pools.insert(index, self._rank_new(text, title, document_title, others))

        chosen = _allocate([len(d.title.split()) for d in digests], pools, self.budget_words)
        return Summary(
            tuple(
                SectionDigest(
                    d.section_id,
                    d.title,
                    tuple(c.sentence for c in sorted(kept, key=lambda c: c.position)),
                )
                for d, kept in zip(digests, chosen, strict=True)
            )
        )

    def _rank_new(
        self, text: str, title: str, document_title: str, others: Sequence[SectionDigest]
    ) -> list[_Candidate]:
        """The new section's sentences, best first, without restatements of the summary."""
        seen = [(s, self._terms(s)) for d in others for s in d.sentences]
        seen_terms = frozenset().union(*(terms for _, terms in seen))
        pool: list[_Candidate] = []
        scored = self._score(self._sentences(text), title, document_title, seen_terms)
        for candidate in sorted(scored, key=_rank_key):
            if not _is_redundant(candidate, seen) and not _is_redundant(
                candidate, ((c.sentence, c.terms) for c in pool)
            ):
                pool.append(candidate)
        return pool

    def _rank_kept(self, digest: SectionDigest, document_title: str) -> list[_Candidate]:
        """An older section's kept sentences, best first; scored afresh, as no score is kept."""
        # The previous summary comes over the wire: skip what this module would never produce.
        sentences = [
            s for s in digest.sentences if s.strip() and len(s.splitlines()) == 1 and not is_junk(s)
        ]
        return sorted(self._score(sentences, digest.title, document_title), key=_rank_key)

    def _sentences(self, text: str) -> list[str]:
        # A segmenter per call: pysbd keeps per-call state on the instance, and building one
        # costs microseconds.
        segmenter = pysbd.Segmenter(language=self.language, clean=False)
        sentences = []
        for segment in self._mend(segmenter.segment(text)):
            # pysbd breaks at newlines already; splitting again guarantees one line per section.
            for line in segment.splitlines():
                fragment = line.strip()
                # A lead-in ending with a colon says nothing without the list that follows it.
                if fragment.startswith(_MARKUP_PREFIXES) or fragment.endswith(":"):
                    continue
                fragment = _LIST_MARKER.sub("", fragment, count=1)
                # pysbd can rewrite a few patterns even with clean=False, and the summary must
                # only ever quote the section.
                if (
                    len(fragment.split()) >= MIN_SENTENCE_WORDS
                    and fragment in text
                    and not is_junk(fragment)
                ):
                    sentences.append(fragment)
        return sentences

    def _mend(self, segments: list[str]) -> list[str]:
        """pysbd's segments, with a split after an abbreviation it does not know undone
        (its Spanish rules split "El Sr. García" and "p. ej."); segments keep their trailing
        white space, so joining two gives the text back."""
        mended: list[str] = []
        for segment in segments:
            previous = mended[-1] if mended else ""
            if (
                previous
                and "\n" not in previous
                and ends_with_abbreviation(previous, self.language)
            ):
                mended[-1] = previous + segment
            else:
                mended.append(segment)
        return mended

    def _terms(self, text: str) -> frozenset[str]:
        return frozenset(self._term_list(text))

    def _term_list(self, text: str) -> list[str]:
        terms = []
        for word in _WORD.findall(text.lower()):
            if len(word) < 2 or word in self._stopwords:
                continue
            # Crude plural folding, so "aqueducts" and "aqueduct" count as one term.
            if (
                self.language in ("en", "es")
                and len(word) > 3
                and word[-1] == "s"
                and word[-2] != "s"
            ):
                word = word[:-1]
            terms.append(word)
        return terms

    def _score(
        self,
        sentences: Sequence[str],
        title: str,
        document_title: str,
        seen_terms: frozenset[str] = frozenset(),
    ) -> list[_Candidate]:
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
            candidates.append(
                _Candidate(position, sentence, len(sentence.split()), term_set, score)
            )
        return candidates


def _rank_key(candidate: _Candidate) -> tuple[float, int]:
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


def _is_redundant(candidate: _Candidate, kept: Iterable[tuple[str, frozenset[str]]]) -> bool:
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


def _allocate(
    title_words: list[int], pools: list[list[_Candidate]], budget: int
) -> list[list[_Candidate]]:
    """Chooses sentences per section from pools ranked best first, within `budget` words."""
    n = len(pools)
    # Each section's one guaranteed sentence is its best one within an equal share of the
    # budget. A section only keeps what it was given, so a long sentence kept now would crowd
    # out the sections still to come: the share assumes at least PLANNED_SECTIONS sections.
    planned = max(n, PLANNED_SECTIONS)
    titles_planned = sum(title_words) * planned / n
    fair_share = max(MIN_SENTENCE_WORDS, int((budget - titles_planned) / planned))
    floors = [_best_within(pool, fair_share) for pool in pools]

    def floor_words() -> int:
        return sum(title_words) + sum(c.words for c in floors if c is not None)

    if floor_words() > budget:
        floors = [_best_within(pool, 0) for pool in pools]
        for oldest in range(n):
            if floor_words() <= budget:
                break
            floors[oldest] = None

    chosen = [[c] if c is not None else [] for c in floors]
    remaining = budget - floor_words()
    # Oldest first, each takes its weighted share of what is left, so words an older section
    # cannot use flow on to the newer ones.
    weights = [RECENCY_DECAY ** (n - 1 - i) for i in range(n)]
    for i in range(n):
        share = int(remaining * weights[i] / sum(weights[i:]))
        remaining -= _fill(pools[i], chosen[i], share)
    # Words still left (sentences too long for a share) go to the newest sections first.
    for i in reversed(range(n)):
        remaining -= _fill(pools[i], chosen[i], remaining)
    return chosen


def _best_within(pool: list[_Candidate], max_words: int) -> _Candidate | None:
    """The best sentence of at most `max_words`; failing that, the shortest (best-ranked first)."""
    if not pool:
        return None
    fitting = (c for c in pool if c.words <= max_words)
    # min() keeps the first of equally short sentences, which is the highest-ranked.
    return next(fitting, None) or min(pool, key=lambda c: c.words)


def _fill(pool: list[_Candidate], chosen: list[_Candidate], allowance: int) -> int:
    """Adds the best sentences of `pool` that fit in `allowance` words; returns the words used."""
    used = 0
    for candidate in pool:
        if candidate not in chosen and used + candidate.words <= allowance:
            chosen.append(candidate)
            used += candidate.words
    return used
