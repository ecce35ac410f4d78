"""Handshake authentication: the JWT verifier (HS256 and JWKS), the JWKS key cache, the
Origin check and the auth settings read from the environment. The end-to-end answers are in
tests/test_security_matrix.py; this file pins the behaviour behind them."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.common.env import ConfigError
from services.edge.auth import AuthError, TokenVerifier, check_origin, mint_dev_token
from services.edge.jwks import JwksKeys, JwksUnavailable, UnknownSigningKey
from services.edge.settings import DEV_JWT_SECRET, EdgeSettings
from tests.support.http import serve_on_free_port
from tests.support.processes import ROOT, free_port, spawn, stop_process

SECRET = "s" * 32
ISSUER = "https://idp.test"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str, **fields: Any) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **fields}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "alice",
        "aud": "docgen",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 60,
        **overrides,
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Idp:
    """A JWKS endpoint whose document, status and delay the test controls."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.delay_s = 0.0
        self.hits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks.json", self._serve)
        self._runner, port = await serve_on_free_port(app, access_log=None)
        self.url = f"http://127.0.0.1:{port}/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    server = Idp()
    await server.start()
    yield server
    await server.stop()


def keys_of(idp: Idp, clock: FakeClock | None = None, **kwargs: Any) -> JwksKeys:
    options = {"cache_s": 300.0, "min_refresh_s": 30.0, "timeout_s": 2.0, **kwargs}
    return JwksKeys(idp.url, clock=clock or FakeClock(), **options)


# --- the JWKS key cache --------------------------------------------------------------------


async def test_a_known_kid_is_served_from_memory_after_one_fetch(idp: Idp) -> None:
    idp.keys = [jwk(rsa_key(), "k1")]
    keys = keys_of(idp)
    first = await keys.key("k1")
    assert await keys.key("k1") is first
    assert idp.hits == 1


async def test_cold_cache_lookups_at_once_share_one_fetch(idp: Idp) -> None:
    idp.keys = [jwk(rsa_key(), "k1")]
    idp.delay_s = 0.1
    keys = keys_of(idp)
    await asyncio.gather(*(keys.key("k1") for _ in range(20)))
    assert idp.hits == 1


async def test_unknown_kids_refetch_at_most_once_per_min_refresh(idp: Idp) -> None:
    idp.keys = [jwk(rsa_key(), "k1")]
    clock = FakeClock()
    keys = keys_of(idp, clock, min_refresh_s=30.0)
    await keys.key("k1")
    clock.now += 31
    with pytest.raises(UnknownSigningKey):
        await keys.key("forged-1")  # may be a rotated key: one refetch
    assert idp.hits == 2
    for n in range(50):  # a flood of forged kids costs the provider nothing more
        with pytest.raises(UnknownSigningKey):
            await keys.key(f"forged-{n}")
    assert idp.hits == 2
    idp.keys.append(jwk(rsa_key(), "k2"))  # the provider rotates in a new key
    clock.now += 31
    assert (await keys.key("k2")).key_id == "k2"
    assert idp.hits == 3


async def test_the_set_is_refetched_when_the_cache_expires(idp: Idp) -> None:
    idp.keys = [jwk(rsa_key(), "k1")]
    clock = FakeClock()
    keys = keys_of(idp, clock, cache_s=300.0)
    await keys.key("k1")
    clock.now += 301
    await keys.key("k1")
    assert idp.hits == 2


async def test_keys_of_other_algorithms_or_uses_are_ignored(idp: Idp) -> None:
    idp.keys = [
        {"kty": "oct", "kid": "symmetric", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
        jwk(rsa_key(), "rs384", alg="RS384"),
        jwk(rsa_key(), "encryption", use="enc"),
        jwk(rsa_key(), "good"),
    ]
    keys = keys_of(idp)
    assert (await keys.key("good")).algorithm_name == "RS256"
    for kid in ("symmetric", "rs384", "encryption"):
        with pytest.raises(UnknownSigningKey):
            await keys.key(kid)


async def test_an_unreachable_jwks_is_unavailable_until_it_answers(idp: Idp) -> None:
    idp.status = 500
    keys = keys_of(idp)
    with pytest.raises(JwksUnavailable):
        await keys.key("k1")
    verifier = TokenVerifier(
        secret=None, audience="docgen", issuer=None, leeway_s=0, jwks={ISSUER: keys}
    )
    key = rsa_key()
    with pytest.raises(AuthError) as refused:
        await verifier.verify(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"}))
    assert (refused.value.status, refused.value.code) == (503, "auth_unavailable")


async def test_a_jwks_outage_keeps_the_keys_fetched_before(idp: Idp) -> None:
    idp.keys = [jwk(rsa_key(), "k1")]
    clock = FakeClock()
    keys = keys_of(idp, clock)
    await keys.key("k1")
    idp.status = 503
    clock.now += 301  # stale: a refetch is tried, fails, and the old keys still serve
    assert (await keys.key("k1")).key_id == "k1"
    assert idp.hits == 2


async def test_the_fetch_does_not_block_the_event_loop(idp: Idp) -> None:
    # The JWKS server runs on this very loop: a blocking fetch could never be answered.
    idp.keys = [jwk(rsa_key(), "k1")]
    idp.delay_s = 0.3
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait_for(keys_of(idp).key("k1"), 5)
    finally:
        ticker.cancel()
    assert ticks >= 10


# --- the verifier ----------------------------------------------------------------------------


async def test_the_issuer_picks_the_jwks_and_the_key_is_only_good_for_that_issuer(idp: Idp) -> None:
    key_a, key_b = rsa_key(), rsa_key()
    idp.keys = [jwk(key_a, "k1")]
    other = Idp()
    await other.start()
    try:
        other.keys = [jwk(key_b, "k1")]
        verifier = TokenVerifier(
            secret=None,
            audience="docgen",
            issuer=None,
            leeway_s=0,
            jwks={ISSUER: keys_of(idp), "https://other.test": keys_of(other)},
        )
        good = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "k1"})
        assert (await verifier.verify(good)).subject == "alice"
        crossed = jwt.encode(
            claims(iss="https://other.test"), key_a, algorithm="RS256", headers={"kid": "k1"}
        )
        with pytest.raises(AuthError) as refused:
            await verifier.verify(crossed)
        assert refused.value.code == "invalid_token"
    finally:
        await other.stop()


async def test_hs256_is_off_when_there_is_no_secret(idp: Idp) -> None:
    verifier = TokenVerifier(
        secret=None, audience="docgen", issuer=None, leeway_s=0, jwks={None: keys_of(idp)}
    )
    with pytest.raises(AuthError) as refused:
        await verifier.verify(jwt.encode(claims(), DEV_JWT_SECRET, algorithm="HS256"))
    assert "algorithm" in refused.value.message
    assert idp.hits == 0  # refused before any key lookup


async def test_rs256_is_refused_without_a_jwks() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="docgen", issuer=None, leeway_s=0)
    token = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(AuthError) as refused:
        await verifier.verify(token)
    assert refused.value.code == "invalid_token"


async def test_leeway_applies_to_exp_and_a_far_future_exp_is_clamped() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="docgen", issuer=None, leeway_s=5)
    recent = jwt.encode(claims(exp=int(time.time()) - 2), SECRET, algorithm="HS256")
    assert (await verifier.verify(recent)).user_id == "alice"
    forever = jwt.encode(claims(exp=10**30), SECRET, algorithm="HS256")
    assert (await verifier.verify(forever)).expires_at == 2.0**53


# --- Origin ----------------------------------------------------------------------------------


ALLOWED = frozenset({"https://app.example"})


@pytest.mark.parametrize(
    ("headers", "allow_missing", "code"),
    [
        ({"Origin": "https://app.example"}, True, None),
        ({}, True, None),
        ({}, False, "origin_required"),
        ({"Sec-Fetch-Mode": "websocket"}, True, "origin_required"),
        ({"Origin": "https://app.example.evil.com"}, True, "origin_not_allowed"),
        ({"Origin": "https://APP.example"}, True, "origin_not_allowed"),
        ({"Origin": "https://app.example/"}, True, "origin_not_allowed"),
    ],
)
def test_origin_is_matched_exactly(
    headers: dict[str, str], allow_missing: bool, code: str | None
) -> None:
    if code is None:
        check_origin(headers, allowed=ALLOWED, any_origin=False, allow_missing=allow_missing)
        return
    with pytest.raises(AuthError) as refused:
        check_origin(headers, allowed=ALLOWED, any_origin=False, allow_missing=allow_missing)
    assert (refused.value.status, refused.value.code) == (403, code)


def test_star_allows_any_origin_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not EdgeSettings().any_origin
    monkeypatch.setenv("DOCGEN_ALLOWED_ORIGINS", "*")
    settings = EdgeSettings.from_env()
    assert settings.any_origin
    check_origin(
        {"Origin": "https://anything.test"},
        allowed=settings.origins,
        any_origin=True,
        allow_missing=True,
    )


# --- settings --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "DOCGEN_JWT_SECRET",
        "DOCGEN_DEV_MODE",
        "DOCGEN_JWT_JWKS_URL",
        "DOCGEN_JWT_JWKS_URLS",
        "DOCGEN_JWT_ISSUER",
        "DOCGEN_ALLOWED_ORIGINS",
        "DOCGEN_ALLOW_NO_ORIGIN",
        "DOCGEN_EDGE_HOST",
        "DOCGEN_JWT_SECRET_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_short_secret_is_refused_unless_dev_mode(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("DOCGEN_JWT_SECRET", "short")
    with pytest.raises(ConfigError, match="DOCGEN_DEV_MODE"):
        EdgeSettings.from_env()
    clean_env.setenv("DOCGEN_DEV_MODE", "1")
    with caplog.at_level(logging.WARNING):
        assert EdgeSettings.from_env().jwt_secret == "short"
    assert "DOCGEN_DEV_MODE=1" in caplog.text


def test_no_secret_means_the_dev_secret_loudly_or_none_beside_a_jwks(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert EdgeSettings.from_env().uses_dev_secret
    assert "public development secret" in caplog.text
    clean_env.setenv("DOCGEN_JWT_JWKS_URL", "https://idp.test/jwks.json")
    clean_env.setenv("DOCGEN_JWT_ISSUER", ISSUER)
    settings = EdgeSettings.from_env()
    assert settings.jwt_secret is None
    assert settings.jwks_urls == ((ISSUER, "https://idp.test/jwks.json"),)


def test_jwks_urls_map_issuers_to_their_jwks(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "DOCGEN_JWT_JWKS_URLS",
        "https://a.test=https://a.test/jwks, https://b.test=https://b.test/k?x=1",
    )
    assert EdgeSettings.from_env().jwks_urls == (
        ("https://a.test", "https://a.test/jwks"),
        ("https://b.test", "https://b.test/k?x=1"),
    )
    for bad in ("https://a.test", "=https://a.test/jwks", "a=u1,a=u2"):
        clean_env.setenv("DOCGEN_JWT_JWKS_URLS", bad)
        with pytest.raises(ConfigError, match="DOCGEN_JWT_JWKS_URLS"):
            EdgeSettings.from_env()
    clean_env.setenv("DOCGEN_JWT_JWKS_URLS", "a=u1")
    clean_env.setenv("DOCGEN_JWT_JWKS_URL", "u2")
    with pytest.raises(ConfigError, match="not both"):
        EdgeSettings.from_env()


def test_clients_without_origin_are_allowed_by_default(clean_env: pytest.MonkeyPatch) -> None:
    # The CLI and internal clients send no Origin; a browser always does.
    assert EdgeSettings.from_env().allow_missing_origin is True
    clean_env.setenv("DOCGEN_ALLOW_NO_ORIGIN", "0")
    assert EdgeSettings.from_env().allow_missing_origin is False


# --- the development secret and tokens (issue 18, item 8) ------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "edge.internal"])
@pytest.mark.parametrize("secret", [None, DEV_JWT_SECRET])
def test_the_dev_secret_is_refused_when_the_edge_listens_beyond_loopback(
    clean_env: pytest.MonkeyPatch, host: str, secret: str | None
) -> None:
    clean_env.setenv("DOCGEN_EDGE_HOST", host)
    if secret is not None:
        clean_env.setenv("DOCGEN_JWT_SECRET", secret)
    with pytest.raises(ConfigError, match=r"DOCGEN_EDGE_HOST.*DOCGEN_JWT_SECRET"):
        EdgeSettings.from_env()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_dev_secret_still_serves_local_development(
    clean_env: pytest.MonkeyPatch, host: str
) -> None:
    clean_env.setenv("DOCGEN_EDGE_HOST", host)
    assert EdgeSettings.from_env().uses_dev_secret


def test_a_real_secret_or_a_jwks_may_listen_anywhere(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DOCGEN_EDGE_HOST", "0.0.0.0")
    clean_env.setenv("DOCGEN_JWT_SECRET", "q3N8vVt0l4XxgYgS5c1k2m9ZpQwErTyU")
    assert EdgeSettings.from_env().host == "0.0.0.0"
    clean_env.delenv("DOCGEN_JWT_SECRET")
    clean_env.setenv("DOCGEN_JWT_JWKS_URL", "https://idp.test/jwks.json")
    clean_env.setenv("DOCGEN_JWT_ISSUER", ISSUER)
    assert EdgeSettings.from_env().jwt_secret is None


def example_secret_placeholder() -> str:
    """The jwt-secret of deploy/kubernetes/secret.example.yaml, whatever it says today."""
    path = Path(__file__).resolve().parents[1] / "deploy/kubernetes/secret.example.yaml"
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("metadata", {}).get("name") == "docgen-secrets":
            return str(document["stringData"]["jwt-secret"])
    raise AssertionError("no docgen-secrets Secret in the example")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_example_secrets_placeholder_fails_start_up(
    clean_env: pytest.MonkeyPatch, host: str
) -> None:
    placeholder = example_secret_placeholder()
    assert len(placeholder.encode()) >= 32  # long enough: the length check alone let it in
    clean_env.setenv("DOCGEN_EDGE_HOST", host)
    clean_env.setenv("DOCGEN_JWT_SECRET", placeholder)
    with pytest.raises(ConfigError, match="placeholder"):
        EdgeSettings.from_env()
    clean_env.setenv("DOCGEN_DEV_MODE", "1")  # no way around it
    with pytest.raises(ConfigError, match="placeholder"):
        EdgeSettings.from_env()


def test_development_tokens_last_one_hour() -> None:
    from clients.cli import DEFAULT_TTL_S

    claims = jwt.decode(mint_dev_token("dev"), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert DEFAULT_TTL_S == 3600


async def test_an_edge_process_bound_to_every_interface_without_a_secret_does_not_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_JWT")}
    env.update(DOCGEN_EDGE_HOST="0.0.0.0", DOCGEN_EDGE_PORT=str(free_port()))
    process = await spawn(
        sys.executable, "-m", "services.edge", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await stop_process(process)
    assert process.returncode != 0
    assert b"DOCGEN_JWT_SECRET" in stderr


# --- the user key (issue 18, item 7) ---------------------------------------------------------


async def test_one_signer_keeps_the_plain_sub_as_user_id(idp: Idp) -> None:
    hs_only = TokenVerifier(secret=SECRET, audience="docgen", issuer=None, leeway_s=0)
    principal = await hs_only.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert (principal.user_id, principal.subject) == ("alice", "alice")
    key = rsa_key()
    idp.keys = [jwk(key, "k1")]
    jwks_only = TokenVerifier(
        secret=None, audience="docgen", issuer=None, leeway_s=0, jwks={ISSUER: keys_of(idp)}
    )
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})
    assert (await jwks_only.verify(token)).user_id == "alice"


async def test_with_several_signers_the_user_is_signer_issuer_and_sub(idp: Idp) -> None:
    key_a, key_b = rsa_key(), rsa_key()
    idp.keys = [jwk(key_a, "k1")]
    other = Idp()
    await other.start()
    try:
        other.keys = [jwk(key_b, "k1")]
        verifier = TokenVerifier(
            secret=SECRET,
            audience="docgen",
            issuer=None,
            leeway_s=0,
            jwks={ISSUER: keys_of(idp), "https://other.test": keys_of(other)},
        )
        from_a = jwt.encode(claims(), key_a, algorithm="RS256", headers={"kid": "k1"})
        from_b = jwt.encode(
            claims(iss="https://other.test"), key_b, algorithm="RS256", headers={"kid": "k1"}
        )
        # The shared secret's holder claiming A's issuer is still not A's alice.
        from_secret = jwt.encode(claims(iss=ISSUER), SECRET, algorithm="HS256")
        principals = [await verifier.verify(t) for t in (from_a, from_b, from_secret)]
    finally:
        await other.stop()
    assert [p.user_id for p in principals] == [
        '["jwks","https://idp.test","alice"]',
        '["jwks","https://other.test","alice"]',
        '["hs256",null,"alice"]',
    ]
    assert {p.subject for p in principals} == {"alice"}
