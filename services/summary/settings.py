"""Summary service configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.env import env_int, env_str


@dataclass(frozen=True)
class SummarySettings:
    addr: str = "127.0.0.1:50052"
    """Where the gRPC server listens (`DOCGEN_SUMMARY_ADDR`)."""
    budget_words: int = 250
    """Length budget of the global summary in words (`DOCGEN_SUMMARY_BUDGET_WORDS`)."""
    max_section_chars: int = 32_000
    """Only the first this-many characters of a section are summarised; a 4096-token
    section is well below it (`DOCGEN_SUMMARY_MAX_SECTION_CHARS`). Bounds the CPU one
    request can take."""
    language: str = "en"
    """Language for sentence segmentation (`DOCGEN_SUMMARY_LANGUAGE`, pysbd codes)."""

    @classmethod
    def from_env(cls) -> SummarySettings:
        return cls(
            addr=env_str("DOCGEN_SUMMARY_ADDR", cls.addr),
            budget_words=env_int("DOCGEN_SUMMARY_BUDGET_WORDS", cls.budget_words, minimum=20),
            max_section_chars=env_int(
                "DOCGEN_SUMMARY_MAX_SECTION_CHARS", cls.max_section_chars, minimum=1000
            ),
            language=env_str("DOCGEN_SUMMARY_LANGUAGE", cls.language),
        )
