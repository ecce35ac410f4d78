"""docs/planner.openapi.yaml is a valid OpenAPI 3.1 document (checked by
openapi-spec-validator), its outline is the inline outline of schemas/client/generate.json,
and the planners docgen is tested and developed against (the development planner of
`make run`, the test planner) answer as it says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from services.dev_planner import create_app, load_outlines
from services.generator.planner import outline_from_body
from tests.support.planner import PlanReply, ScriptedPlanner

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "docs" / "planner.openapi.yaml"
OPERATION = "/v1/documents/{document_id}/outline"
EXAMPLES = ROOT / "examples" / "outlines"


def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def without_prose(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: without_prose(value)
            for key, value in schema.items()
            if key not in ("description", "examples", "title")
        }
    if isinstance(schema, list):
        return [without_prose(item) for item in schema]
    return schema


def check_answer(status: int, content_type: str, body: Any) -> None:
    """The answer is one the fragment declares, with a body its schema accepts."""
    document = spec()
    responses = document["paths"][OPERATION]["get"]["responses"]
    declared = str(status) if str(status) in responses else f"{str(status)[0]}XX"
    assert declared in responses, f"HTTP {status} is not in the contract"
    content = responses[declared].get("content")
    if content is None:
        return
    assert content_type in content, f"HTTP {status} as {content_type} is not in the contract"
    schema = {**content[content_type]["schema"], "components": document["components"]}
    OAS31Validator(schema).validate(body)


def test_the_fragment_is_valid_openapi_3_1() -> None:
    spec_dict, base_uri = read_from_filename(str(SPEC_PATH))
    validate(spec_dict, base_uri=base_uri)
    assert spec_dict["openapi"].startswith("3.1.")
    assert list(spec_dict["paths"]) == [OPERATION]


def test_its_outline_is_the_inline_outline() -> None:
    generate = json.loads((ROOT / "schemas" / "client" / "generate.json").read_text())
    assert without_prose(spec()["components"]["schemas"]["Outline"]) == without_prose(
        generate["properties"]["outline"]
    )


def test_its_error_table_matches_the_prose() -> None:
    prose = (ROOT / "docs" / "planner.md").read_text(encoding="utf-8")
    for code in (
        "plan_not_found",
        "plan_forbidden",
        "planner_unavailable",
        "invalid_outline",
        "planner_not_configured",
    ):
        assert f"`{code}`" in prose
    for status in spec()["paths"][OPERATION]["get"]["responses"]:
        assert status.replace("XX", "xx") in prose, status


@pytest.fixture
async def dev_planner(
    aiohttp_client: Callable[..., Any],
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(load_outlines(EXAMPLES)))
    return client


async def test_the_dev_planner_serves_every_example_as_the_contract_says(
    dev_planner: TestClient[Any, Any],
) -> None:
    examples = {p.name: json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))}
    assert examples
    for name, outline in examples.items():
        response = await dev_planner.get(
            f"/v1/documents/{outline['document_id']}/outline",
            headers={"Authorization": "Bearer any", "Accept": "application/json"},
        )
        body = await response.json()
        assert response.status == 200, name
        check_answer(response.status, response.content_type, body)
        assert body == outline
        # ... and docgen accepts it.
        assert outline_from_body(outline["document_id"], json.dumps(body).encode()).sections


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/documents/nope/outline", {"Authorization": "Bearer any"}, 404),
        ("/v1/documents/course-sourdough-101/outline", {}, 401),
        ("/v1/documents/course-sourdough-101/outline", {"Authorization": "Basic eA=="}, 401),
    ],
)
async def test_the_dev_planner_refuses_as_the_contract_says(
    dev_planner: TestClient[Any, Any], path: str, headers: dict[str, str], status: int
) -> None:
    response = await dev_planner.get(path, headers=headers)
    assert response.status == status
    check_answer(response.status, response.content_type, await response.json())


async def test_the_test_planner_answers_as_the_contract_says() -> None:
    outline = json.loads((EXAMPLES / "intro-to-sourdough.json").read_text())
    replies = [PlanReply(), PlanReply(status=404), PlanReply(status=403), PlanReply(status=503)]
    planner = ScriptedPlanner(
        outlines={outline["document_id"]: outline}, script=lambda n, _id: replies[n]
    )
    await planner.start()
    try:
        async with aiohttp.ClientSession() as session:
            for reply in replies:
                async with session.get(
                    f"{planner.url}/v1/documents/{outline['document_id']}/outline"
                ) as response:
                    assert response.status == reply.status
                    check_answer(response.status, response.content_type, await response.json())
    finally:
        await planner.stop()
