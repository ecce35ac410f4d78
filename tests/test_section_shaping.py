"""Through the real edge, generator and summary, with the scripted OpenAI server: scaffolding in
the LLM's reply never reaches the client, a section ends at the first sentence end past its
target (and the LLM sees its request closed), and a Spanish outline is detected, asked for in
Spanish and summarised by Spanish sentence rules."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import sections_text, start_stack, wait_for


def outline(sections: list[dict[str, Any]], title: str = "City bike share") -> dict[str, Any]:
    return {"document_id": "doc-shape", "title": title, "sections": sections}


def section_end(frames: list[dict[str, Any]], section_id: str) -> dict[str, Any]:
    return next(f for f in frames if f["type"] == "section_end" and f["section_id"] == section_id)


def chunks(frames: list[dict[str, Any]]) -> list[str]:
    return [f["delta"] for f in frames if f["type"] == "section_chunk"]


# The reply, token by token: a tag, a preamble, a title echo, markup mid-text, a closing tag
# split across two deltas, a chat-template token, and prose with `<` and `>` in it.
SCAFFOLDED = [
    "<sum",
    "mary>\n",
    "Here's",
    " a two-paragraph section:",
    "\n\n",
    "[Why now]\n",
    "Cars fill",
    " the <b>streets</b>",
    " every day",
    ", and a < b when",
    " prices > costs.",
    " </",
    "summary",
    "> Docks",
    " cost little.",
    "<|im_end|>",
]
CLEAN = "Cars fill the streets every day, and a < b when prices > costs. Docks cost little."


async def test_scaffolding_never_reaches_the_client_and_the_hash_matches() -> None:
    stack = await start_stack(ScriptedLLM(lambda _n, _body: Reply(tokens=SCAFFOLDED)))
    try:
        client = await stack.connect()
        sections = [{"id": "why", "title": "Why now", "brief": "Traffic", "target_tokens": 200}]
        await client.send({"type": "generate", "outline": outline(sections)})
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert frames[-1]["status"] == "completed"
    deltas = chunks(frames)
    for delta in deltas:
        for scaffolding in ("<sum", "mary>", "</", "<b>", "<|", "Here's", "[Why"):
            assert scaffolding not in delta
    text = sections_text(frames)["why"]
    assert text == CLEAN
    end = section_end(frames, "why")
    assert end["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert end["chars"] == len(text)
    assert end["finish_reason"] == "stop"
    # The prompt asked for the chat-template tokens as stop sequences.
    assert "<|im_end|>" in stack.llm.requests[0].body["stop"]


# Seen on the bundled model: a preamble line in Spanish, then the request read back as the
# subject of the first sentence (that sentence goes); in the next section, the request read
# back as an adverbial (it goes, the clause after it stays, capitalised).
ECHOED = {
    0: [
        "Dos párrafos en",
        " español para el siguiente:",
        "\n\n",
        'La parte "Riego',
        ' y plagas" de un informe titulado "Un huerto',
        ' en casa" es una guía para regar.',
        " El riego por goteo",
        " ahorra agua.",
    ],
    1: ['En el informe titulado "Un huerto en casa", las', " cosechas", " se guardan en frío."],
}


async def test_request_echoes_never_reach_the_client_and_the_hash_matches() -> None:
    stack = await start_stack(ScriptedLLM(lambda n, _body: Reply(tokens=ECHOED[n])))
    try:
        client = await stack.connect()
        sections = [
            {"id": "riego", "title": "Riego y plagas", "target_tokens": 200},
            {"id": "cosecha", "title": "La cosecha", "target_tokens": 200},
        ]
        await client.send(
            {"type": "generate", "outline": outline(sections, title="Un huerto en casa")}
        )
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert frames[-1]["status"] == "completed"
    for delta in chunks(frames):
        for echo in ("Dos párrafos", "siguiente:", "La parte", "titulado", "guía"):
            assert echo not in delta
    texts = sections_text(frames)
    assert texts == {
        "riego": "El riego por goteo ahorra agua.",
        "cosecha": "Las cosechas se guardan en frío.",
    }
    for section_id, text in texts.items():
        end = section_end(frames, section_id)
        assert end["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert end["chars"] == len(text)


async def test_a_first_line_that_reads_the_brief_back_never_reaches_the_client() -> None:
    brief = "What a new engineer lacks in the first month, and what a slow start costs."
    # Seen on the bundled model: the brief, verbatim, as the section's first line.
    reply = ["What a new engineer", " lacks in the first month,", " and what a slow start"]
    reply += [" costs.\n", "A new hire", " starts blind."]
    stack = await start_stack(ScriptedLLM(lambda _n, _body: Reply(tokens=reply)))
    try:
        client = await stack.connect()
        sections = [{"id": "why", "title": "Why a plan", "brief": brief, "target_tokens": 200}]
        await client.send({"type": "generate", "outline": outline(sections)})
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert frames[-1]["status"] == "completed"
    assert sections_text(frames)["why"] == "A new hire starts blind."
    assert all("lacks" not in delta for delta in chunks(frames))


LONG = (
    "Bike share began in Amsterdam in 1965. The first bikes were painted white. "
    "Most were stolen within weeks, e.g. by students. Later schemes used docks and cards. "
    "Today phones unlock most bikes. Cities pay for the docks and the vans. "
    "Riders pay a small fee per trip. Some schemes add electric bikes."
)


async def test_the_section_ends_at_the_first_sentence_end_past_its_target() -> None:
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=words(LONG), token_delay_s=0.02))
    stack = await start_stack(llm)
    target = 14
    try:
        client = await stack.connect()
        sections = [{"id": "history", "title": "History", "target_tokens": target}]
        await client.send({"type": "generate", "outline": outline(sections)})
        frames = await client.run_to_end()
        # The generator closed the LLM request: the scripted server saw the client go away.
        await wait_for(lambda: llm.requests[0].disconnected_at is not None)
    finally:
        await stack.close()
    text = sections_text(frames)["history"]
    # 14 tokens reach into the third sentence; "e.g." is no sentence end.
    assert text == (
        "Bike share began in Amsterdam in 1965. The first bikes were painted white. "
        "Most were stolen within weeks, e.g. by students."
    )
    end = section_end(frames, "history")
    assert end["finish_reason"] == "stop"
    assert end["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert not llm.requests[0].completed
    # Headroom: the hard cap sent to the LLM is 1.5 x the target.
    assert llm.requests[0].body["max_tokens"] == math.ceil(1.5 * target)


async def test_a_section_cut_by_the_hard_cap_still_says_length() -> None:
    endless = words("and the docks and the vans and the riders and the fees and the bikes")
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=endless, finish_reason="length"))
    stack = await start_stack(llm, generator={"section_headroom": 2.0})
    try:
        client = await stack.connect()
        sections = [{"id": "fees", "title": "Fees", "target_tokens": 5}]
        await client.send({"type": "generate", "outline": outline(sections)})
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert section_end(frames, "fees")["finish_reason"] == "length"
    # No sentence ended after the hold began (at 0.9 x the target): the section still ends
    # on a whole word; the last token, perhaps half a word, is dropped.
    assert sections_text(frames)["fees"] == "".join(endless[:-1])
    assert llm.requests[0].body["max_tokens"] == 10


CUT = "Las estaciones se pagan con las cuotas. Los usuarios eligen la tarifa y el que quiera ahor"


async def test_a_section_cut_by_the_hard_cap_ends_after_its_last_whole_sentence() -> None:
    # Seen on the bundled model: a Spanish section hit its hard cap mid-word ("... ahor").
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=words(CUT), finish_reason="length"))
    stack = await start_stack(llm)
    try:
        client = await stack.connect()
        sections = [{"id": "cuotas", "title": "Cuotas", "target_tokens": 8}]
        await client.send({"type": "generate", "outline": outline(sections, "Bicis")})
        frames = await client.run_to_end()
    finally:
        await stack.close()
    text = sections_text(frames)["cuotas"]
    assert text == "Las estaciones se pagan con las cuotas."
    end = section_end(frames, "cuotas")
    assert end["finish_reason"] == "length"
    assert end["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()


SPANISH_TEXT = (
    "El Sr. García abrió la primera estación en mayo. "
    "Las bicis compartidas sirven para trayectos cortos, p. ej. ir al trabajo o a clase. "
    "Cada estación cuesta unos veinte mil euros."
)


async def test_a_spanish_outline_is_detected_asked_for_and_summarised_in_spanish() -> None:
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=words(SPANISH_TEXT)))
    stack = await start_stack(llm)
    try:
        client = await stack.connect()
        sections = [
            {
                "id": "inicio",
                "title": "Cómo empezó el servicio",
                "brief": "Quién abrió las primeras estaciones y para qué sirven las bicis",
                "target_tokens": 200,
            }
        ]
        await client.send(
            {
                "type": "generate",
                "outline": outline(sections, "Bicicletas compartidas en la ciudad"),
            }
        )
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert frames[0]["type"] == "run_started" and frames[0]["language"] == "es"
    prompt = llm.requests[0].body["messages"]
    assert "en español" in prompt[0]["content"]
    assert prompt[1]["content"].startswith("Escribe dos párrafos en español")
    summary = next(f for f in frames if f["type"] == "summary_update")["summary"]
    assert summary.startswith("Cómo empezó el servicio: ")
    # Whole sentences only: "Sr." and "p. ej." did not split them.
    assert sentences_of(summary.removeprefix("Cómo empezó el servicio: "))


def sentences_of(text: str) -> list[str]:
    """The summary's sentences, knowing each one is a whole sentence of SPANISH_TEXT."""
    found, rest = [], text
    for sentence in (
        "El Sr. García abrió la primera estación en mayo.",
        "Las bicis compartidas sirven para trayectos cortos, p. ej. ir al trabajo o a clase.",
        "Cada estación cuesta unos veinte mil euros.",
    ):
        if sentence in rest:
            found.append(sentence)
            rest = rest.replace(sentence, "")
    assert not rest.strip(), f"a piece of a sentence in the summary: {rest!r}"
    return found


async def test_an_explicit_language_is_echoed_and_wins_over_detection() -> None:
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=words("Bikes help.")))
    stack = await start_stack(llm)
    try:
        client = await stack.connect()
        sections = [{"id": "a", "title": "Why bikes", "target_tokens": 50}]
        await client.send(
            {"type": "generate", "outline": {**outline(sections), "language": "pt-br"}}
        )
        frames = await client.run_to_end()
    finally:
        await stack.close()
    assert frames[0]["language"] == "pt-BR"
    assert "in português" in llm.requests[0].body["messages"][1]["content"]
