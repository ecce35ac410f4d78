"""The token parser against hostile JSON: every header and claim field takes arbitrary JSON
values (lists, objects, huge numbers, NaN, nesting), signed correctly so the parser gets past
the signature. The only answers are a principal or a documented `AuthError`; nothing else
escapes `TokenVerifier.verify`, and the explicit checks catch every shape on their own (the
last-resort net that turns a stray exception into `invalid_token` is never needed).

Issue 18, item 1: `{"alg": ["HS256"]}` used to raise TypeError (HTTP 500 at the edge)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from services.common import metrics
from services.edge.auth import AuthError, Principal, TokenVerifier
from services.edge.jwks import JwksKeys
from services.edge.settings import EdgeSettings
from tests.support.stack import start_edge

SECRET = "fuzz-secret-" + "f" * 40
ISSUER = "https://idp.test"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
DOCUMENTED = {
    (401, "invalid_token"),
    (401, "token_expired"),
    (401, "token_not_yet_valid"),
    (503, "auth_unavailable"),
}
HEADER_FIELDS = ("alg", "typ", "kid", "crit", "jku", "x5u", "jwk", "x5c", "b64", "cty", "zip")
CLAIM_FIELDS = ("sub", "aud", "iss", "exp", "nbf", "iat", "jti")


class StaticKeys(JwksKeys):
    """A JWKS already fetched: the fuzz is about the parser, not the network."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/unused", cache_s=1, min_refresh_s=1, timeout_s=1)
        rsa_jwk = {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "k1"}
        ec_jwk = {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "e1"}
        self._static = {
            "k1": PyJWK({**rsa_jwk, "alg": "RS256"}),
            "e1": PyJWK({**ec_jwk, "alg": "ES256"}),
        }

    async def key(self, kid: str) -> PyJWK:
        return self._static[kid] if kid in self._static else await super().key(kid)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(signing_input: bytes, header: Any) -> bytes:
    """The signature the header's `alg` asks for (HS256 when it names nothing we know)."""
    alg = header.get("alg") if isinstance(header, dict) else None
    if alg == "RS256":
        return RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input, RSA_KEY)
    if alg == "ES256":
        return ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, EC_KEY)
    return HMACAlgorithm(HMACAlgorithm.SHA256).sign(signing_input, SECRET.encode())


def token(header: Any, claims: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode(), header))}"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities too: json.dumps writes them, pyjwt's json.loads reads them
    | st.text(max_size=20)
    | st.sampled_from(["HS256", "RS256", "ES256", "none", "k1", "e1", ISSUER, "docgen"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def overrides(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of `fields` (and a stray key or two) replaced by arbitrary JSON, some dropped."""
    return st.dictionaries(st.sampled_from(fields) | st.text(max_size=6), JSON, max_size=4)


@st.composite
def headers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON)  # not even an object
    alg = draw(st.sampled_from(["HS256", "RS256", "ES256"]))
    base = {"alg": alg, "typ": "JWT", "kid": {"RS256": "k1", "ES256": "e1"}.get(alg, "k1")}
    header = {**base, **draw(overrides(HEADER_FIELDS))}
    for name in draw(st.lists(st.sampled_from(HEADER_FIELDS), max_size=2)):
        header.pop(name, None)
    return header


@st.composite
def claim_sets(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON)
    now = int(time.time())
    base = {"sub": "alice", "aud": "docgen", "iss": ISSUER, "iat": now, "exp": now + 60}
    claims = {**base, **draw(overrides(CLAIM_FIELDS))}
    for name in draw(st.lists(st.sampled_from(CLAIM_FIELDS), max_size=2)):
        claims.pop(name, None)
    return claims


VERIFIERS = {
    "hs256 only": TokenVerifier(secret=SECRET, audience="docgen", issuer=None, leeway_s=1),
    "hs256 with issuer": TokenVerifier(secret=SECRET, audience="docgen", issuer=ISSUER, leeway_s=1),
    "jwks by issuer": TokenVerifier(
        secret=SECRET, audience="docgen", issuer=None, leeway_s=1, jwks={ISSUER: StaticKeys()}
    ),
    "jwks any issuer": TokenVerifier(
        secret=None, audience="docgen", issuer=None, leeway_s=1, jwks={None: StaticKeys()}
    ),
}


class Records(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def answer(verifier: TokenVerifier, raw: str) -> Principal | tuple[int, str]:
    try:
        return asyncio.run(verifier.verify(raw))
    except AuthError as refused:
        return (refused.status, refused.code)


@pytest.mark.parametrize("name", list(VERIFIERS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers(), claims=claim_sets())
def test_any_json_in_the_header_or_claims_gets_a_documented_answer(
    name: str, header: Any, claims: Any
) -> None:
    net = logging.getLogger("services.edge.auth")
    handler = Records(logging.WARNING)
    net.addHandler(handler)
    try:
        result = answer(VERIFIERS[name], token(header, claims))
    finally:
        net.removeHandler(handler)
    if isinstance(result, Principal):
        assert isinstance(claims, dict) and claims["sub"] == result.subject
    else:
        assert result in DOCUMENTED, result
    assert handler.records == [], "a malformed field slipped past the explicit checks"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": ["HS256"]},
        {"alg": {"HS256": True}},
        {"alg": None},
        {"alg": 256},
        {"alg": "RS256", "kid": ["k1"]},
        {"alg": "RS256", "kid": {"k": 1}},
    ],
    ids=repr,
)
@pytest.mark.parametrize("name", list(VERIFIERS))
def test_the_reported_headers_are_invalid_tokens(name: str, header: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"sub": "alice", "aud": "docgen", "iss": ISSUER, "exp": now + 60}
    assert answer(VERIFIERS[name], token(header, claims)) == (401, "invalid_token")


async def test_the_edge_answers_a_list_alg_with_401_one_info_line_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reproduction of the report, against a live edge: 401 `invalid_token` (was 500 and
    an ERROR traceback), counted in the rejection metric, no line above INFO."""
    settings = EdgeSettings(port=0, jwt_secret=SECRET, generator_addr="127.0.0.1:9")
    runner, port = await start_edge(settings)
    rejected = metrics.WS_HANDSHAKE_REJECTIONS.labels("401")
    before = rejected._value.get()
    caplog.set_level(logging.DEBUG)
    try:
        now = int(time.time())
        bad = token({"alg": ["HS256"]}, {"sub": "a", "aud": "docgen", "exp": now + 60})
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{port}/v1/ws",
                headers={"Authorization": f"Bearer {bad}", "Sec-WebSocket-Protocol": "docgen.v1"},
            ) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "invalid_token"
    finally:
        await runner.cleanup()
    assert rejected._value.get() == before + 1
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []
