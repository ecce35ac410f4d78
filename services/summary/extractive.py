"""Extractive fast path of the global summary: keeps verbatim sentences of every section so far,
re-balanced after each section so the whole summary stays within a word budget.

How one `update` works (steps 1 to 3 in `sentence_ranking.py`):

1. The new section is split into sentences with sentencex, by the rules of the document's language
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

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.language import sentence_rules
from services.summary.sentence_ranking import MIN_SENTENCE_WORDS, Candidate, SentenceRanker

# Outlines usually have 6 to 12 sections; see _allocate.
PLANNED_SECTIONS = 10
# Weight of section i of n in the budget share is RECENCY_DECAY ** (n - 1 - i).
RECENCY_DECAY = 0.6


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


class ExtractiveSummarizer:
    """Pure, deterministic and stateless: the previous `Summary` is all the memory it has."""

    def __init__(self, budget_words: int = 250, language: str = "en") -> None:
        if budget_words < 1:
            raise ValueError(f"budget_words must be at least 1, got {budget_words}")
        self.budget_words = budget_words
        self.language = sentence_rules(language)  # InvalidLanguage (ValueError) for a non-tag
        self._ranker = SentenceRanker(self.language)

    def _for_language(self, language: str | None) -> ExtractiveSummarizer:
        """This summarizer with the sentence rules and stop words of `language` (a BCP 47 tag
        of the document; None: the configured default)."""
        if not language:
            return self
        rules = sentence_rules(language)
        if rules == self.language:
            return self
        return ExtractiveSummarizer(self.budget_words, rules)

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
    ) -> list[Candidate]:
        """The new section's sentences, best first, without restatements of the summary."""
        seen = [s for d in others for s in d.sentences]
        return self._ranker.rank_new(text, title, document_title, seen)

    def _rank_kept(self, digest: SectionDigest, document_title: str) -> list[Candidate]:
        """An older section's kept sentences, best first."""
        return self._ranker.rank_kept(digest.sentences, digest.title, document_title)


def _allocate(
    title_words: list[int], pools: list[list[Candidate]], budget: int
) -> list[list[Candidate]]:
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


def _best_within(pool: list[Candidate], max_words: int) -> Candidate | None:
    """The best sentence of at most `max_words`; failing that, the shortest (best-ranked first)."""
    if not pool:
        return None
    fitting = (c for c in pool if c.words <= max_words)
    # min() keeps the first of equally short sentences, which is the highest-ranked.
    return next(fitting, None) or min(pool, key=lambda c: c.words)


def _fill(pool: list[Candidate], chosen: list[Candidate], allowance: int) -> int:
    """Adds the best sentences of `pool` that fit in `allowance` words; returns the words used."""
    used = 0
    for candidate in pool:
        if candidate not in chosen and used + candidate.words <= allowance:
            chosen.append(candidate)
            used += candidate.words
    return used
