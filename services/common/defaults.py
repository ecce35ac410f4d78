"""Values more than one process must agree on, defined once: where each service listens and
is dialled by default, the WebSocket subprotocol, the token audience, the bundled LLM. The
settings classes take their defaults from here; clients and tools import them from here."""

from __future__ import annotations

EDGE_HOST = "127.0.0.1"
EDGE_PORT = 8080
WS_PATH = "/v1/ws"
GENERATOR_ADDR = "127.0.0.1:50051"
SUMMARY_ADDR = "127.0.0.1:50052"

SUBPROTOCOL = "docgen.v1"
"""The WebSocket subprotocol of the protocol's version 1 (docs/protocol.md)."""
JWT_AUDIENCE = "docgen"

BUNDLED_LLM_PORT = 8081
BUNDLED_LLM_BASE_URL = f"http://127.0.0.1:{BUNDLED_LLM_PORT}/v1"
BUNDLED_LLM_MODEL = "SmolLM2-135M-Instruct"
LLM_API_KEY_PLACEHOLDER = "sk-no-key-needed"
"""Sent when no key is configured: local OpenAI-compatible servers ignore it."""


def ws_url(host: str = EDGE_HOST, port: int = EDGE_PORT) -> str:
    """The edge's WebSocket URL at `host:port`."""
    return f"ws://{host}:{port}{WS_PATH}"
