"""The language a document is written in: a BCP 47 tag given with the outline, or detected from
the outline's own text (py3langid), and how prompts and sentence splitting name it.

Why py3langid (measured on this 2-core machine, loaded, on 27 short Spanish and English section
titles and on whole outlines): restricted to the same 8 languages, py3langid and
lingua-language-detector were equally accurate (25/27 titles, every whole outline right), but
py3langid loads in ~3 s against ~13 s (lingua with all languages: ~90 s) and answers in
~0.8 ms against ~1.7 ms per title. Detection looks at the whole outline at once (title, section
titles and briefs), where both were right every time.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_LANGUAGE = "en"
# Below this probability a detection is a guess (two-word outlines such as "Matrix / Section 0"
# come out French at 0.36); the default language is the better bet then.
MIN_PROBABILITY = 0.5

# The languages detection chooses among, and how a prompt names each (in that language: a small
# model follows "en español" better than "in Spanish"). Restricting detection to languages the
# prompt can name also avoids the exotic guesses a 97-language model makes on two-word titles.
LANGUAGE_NAMES = {
    "en": "English",
    "es": "español",
    "pt": "português",
    "fr": "français",
    "de": "Deutsch",
    "it": "italiano",
    "ca": "català",
    "nl": "Nederlands",
}

# BCP 47, as far as a client is likely to send it: a 2-3 letter language, then subtags.
_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3}$")
MAX_TAG_CHARS = 35


class InvalidLanguage(ValueError):
    """`language` is not a BCP 47 tag."""


def normalize_tag(tag: str) -> str:
    """The tag with the usual case (`pt-BR`, `es`); raises `InvalidLanguage` for a non-tag."""
    tag = tag.strip()
    if len(tag) > MAX_TAG_CHARS or not _TAG.match(tag):
        raise InvalidLanguage(f"language {tag[:40]!r} is not a BCP 47 tag such as 'es' or 'pt-BR'")
    primary, *rest = tag.split("-")
    subtags = [s.upper() if len(s) == 2 else s.title() if len(s) == 4 else s for s in rest]
    return "-".join([primary.lower(), *subtags])


def primary(tag: str) -> str:
    """The primary language subtag: `pt` of `pt-BR`."""
    return tag.split("-", 1)[0].lower()


@dataclass(frozen=True)
class Detection:
    language: str
    probability: float


_identifier_lock = threading.Lock()
_identifier = None


def _get_identifier():  # type: ignore[no-untyped-def]
    global _identifier
    with _identifier_lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier.set_languages(list(LANGUAGE_NAMES))
            _identifier = identifier
    return _identifier


def warm_up() -> None:
    """Loads the detection model (a second or three) now rather than on the first run."""
    _get_identifier()


def detect(texts: Iterable[str]) -> Detection:
    """The most likely language of these texts together (an outline's titles and briefs);
    `DEFAULT_LANGUAGE` when there is no text to go on or no language is likely enough."""
    text = "\n".join(t for t in texts if t and t.strip())
    if len(re.findall(r"[^\W\d_]", text)) < 3:
        return Detection(DEFAULT_LANGUAGE, 0.0)
    language, probability = _get_identifier().classify(text)
    if probability < MIN_PROBABILITY:
        return Detection(DEFAULT_LANGUAGE, float(probability))
    return Detection(str(language), float(probability))


def prompt_name(tag: str) -> str:
    """How the section prompt names the language, in that language (`español` for `es-MX`);
    the tag itself for a language without a name here."""
    return LANGUAGE_NAMES.get(primary(tag), tag)


def sentence_rules(tag: str) -> str:
    """The language whose sentence rules apply to `tag`: its primary subtag (`pt` of `pt-BR`).
    The segmenter (sentencex) has rules for ~300 languages and falls back along its own
    language chains, ending at English rules, for the rest."""
    return primary(normalize_tag(tag))
