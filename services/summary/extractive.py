"""Extractive fast path of the global summary: keeps verbatim sentences of every section so far,
re-balanced after each section so the whole summary stays within a word budget.

How one `update` works:

1. The new section is split into sentences with pysbd; markdown headings, table rows and
   fragments under three words are dropped, list markers are cut off (what is left is still a
   verbatim substring of the section).
2. Each sentence is scored: TF-IDF cosine to the rest of the section (centrality), overlap
   with the section title and the document title, novelty against the summary so far, and a
   small prior for the first sentences.
3. Best first, a sentence joins the section's pool unless it is (nearly) the same as one
   already in the pool or anywhere in the previous summary (Jaccard over content words).
4. Older sections keep only what the previous summary holds; their kept sentences are
   re-scored the same way, so they can only shrink.
5. The budget is re-allocated over all sections: one sentence each first, then the rest is
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

MIN_SENTENCE_WORDS = 3
# Jaccard over content words at or above which two sentences say the same thing.
REDUNDANCY_JACCARD = 0.6
# Weight of section i of n in the budget share is RECENCY_DECAY ** (n - 1 - i).
RECENCY_DECAY = 0.6
SECTION_TITLE_WEIGHT = 0.35
DOCUMENT_TITLE_WEIGHT = 0.15
NOVELTY_WEIGHT = 0.2
# Openings tend to state what a section is about.
POSITION_PRIOR = (0.15, 0.08, 0.04)

_WORD = re.compile(r"[^\W_]+")
_LIST_MARKER = re.compile(r"(?:[-*+•]|\d{1,3}[.)]|>)\s+")
_MARKUP_PREFIXES = ("#", "|", "```", "~~~")
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
    )
}


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
        self._stopwords = _STOPWORDS.get(language, frozenset())

    def update(
        self,
        previous: Summary,
        *,
        section_id: str,
        title: str,
        text: str,
        document_title: str = "",
    ) -> Summary:
        """Returns `previous` with the section `section_id` added, or replaced in place when the
        section is already there (a retried section), and the budget re-allocated."""
        # A title with a line break would break the one-line-per-section rendering.
        title = " ".join(title.split())
        others = [d for d in previous.sections if d.section_id != section_id]
        seen = [(s, self._terms(s)) for d in others for s in d.sentences]
        seen_terms = frozenset().union(*(terms for _, terms in seen))

        new_pool: list[_Candidate] = []
        scored = self._score(self._sentences(text), title, document_title, seen_terms)
        for candidate in sorted(scored, key=_rank_key):
            if not _is_redundant(candidate, seen) and not _is_redundant(
                candidate, ((c.sentence, c.terms) for c in new_pool)
            ):
                new_pool.append(candidate)

        digests = [d for d in previous.sections if d.section_id != section_id]
        new_digest = SectionDigest(section_id, title, ())
        index = next(
            (i for i, d in enumerate(previous.sections) if d.section_id == section_id),
            len(digests),
        )
        digests.insert(index, new_digest)
        pools = [
            new_pool
            if d is new_digest
            else sorted(
                self._score([s for s in d.sentences if s.strip()], d.title, document_title),
                key=_rank_key,
            )
            for d in digests
        ]

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

    def _sentences(self, text: str) -> list[str]:
        # A segmenter per call: pysbd keeps per-call state on the instance, and building one
        # costs microseconds.
        segmenter = pysbd.Segmenter(language=self.language, clean=False)
        sentences = []
        for segment in segmenter.segment(text):
            # pysbd breaks at newlines already; splitting again guarantees one line per section.
            for line in segment.splitlines():
                fragment = line.strip()
                if fragment.startswith(_MARKUP_PREFIXES):
                    continue
                fragment = _LIST_MARKER.sub("", fragment, count=1)
                # pysbd can rewrite a few patterns even with clean=False, and the summary must
                # only ever quote the section.
                if len(fragment.split()) >= MIN_SENTENCE_WORDS and fragment in text:
                    sentences.append(fragment)
        return sentences

    def _terms(self, text: str) -> frozenset[str]:
        return frozenset(self._term_list(text))

    def _term_list(self, text: str) -> list[str]:
        terms = []
        for word in _WORD.findall(text.lower()):
            if len(word) < 2 or word in self._stopwords:
                continue
            # Crude plural folding, so "aqueducts" and "aqueduct" count as one term.
            if self.language == "en" and len(word) > 3 and word[-1] == "s" and word[-2] != "s":
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
            candidates.append(
                _Candidate(position, sentence, len(sentence.split()), term_set, score)
            )
        return candidates


def _rank_key(candidate: _Candidate) -> tuple[float, int]:
    return (-candidate.score, candidate.position)


def _tf_idf(term_lists: list[list[str]]) -> list[dict[str, float]]:
    """Term weights per sentence, with the section's sentences as the document collection."""
    document_frequency: Counter[str] = Counter()
    for terms in term_lists:
        document_frequency.update(dict.fromkeys(terms))
    n = len(term_lists)
    idf = {t: math.log((1 + n) / (1 + df)) + 1.0 for t, df in document_frequency.items()}
    return [{t: tf * idf[t] for t, tf in Counter(terms).items()} for terms in term_lists]


def _centrality(vector: dict[str, float], centroid: dict[str, float], centroid_norm2: float) -> float:
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
    return False


def _allocate(
    title_words: list[int], pools: list[list[_Candidate]], budget: int
) -> list[list[_Candidate]]:
    """Chooses sentences per section from pools ranked best first, within `budget` words."""
    n = len(pools)
    floors = [pool[0] if pool else None for pool in pools]

    def floor_words() -> int:
        return sum(title_words) + sum(c.words for c in floors if c is not None)

    if floor_words() > budget:
        # min() keeps the first of equally short sentences, which is the highest-ranked.
        floors = [min(pool, key=lambda c: c.words) if pool else None for pool in pools]
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


def _fill(pool: list[_Candidate], chosen: list[_Candidate], allowance: int) -> int:
    """Adds the best sentences of `pool` that fit in `allowance` words; returns the words used."""
    used = 0
    for candidate in pool:
        if candidate not in chosen and used + candidate.words <= allowance:
            chosen.append(candidate)
            used += candidate.words
    return used
