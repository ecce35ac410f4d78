"""WebSocket handshake authentication: where the JWT is taken from and how it is checked.

Also a command to mint development tokens: `python -m services.edge.auth mint --sub alice`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from services.common.defaults import JWT_AUDIENCE, SUBPROTOCOL
from services.edge.jwks import ALGORITHMS as JWKS_ALGORITHMS
from services.edge.jwks import JwksKeys, JwksUnavailable, UnknownSigningKey
from services.edge.settings import DEV_JWT_SECRET, DEV_TOKEN_TTL_S, dev_token_signing

log = logging.getLogger(__name__)

BEARER_PREFIX = "bearer."
# Fixed allowlist, never taken from the token header (RFC 8725 §3.1): the header's `alg` only
# says which configured key to try, and jwt.decode then accepts that key's one algorithm.
HS_ALGORITHMS = ["HS256"]
MAX_SUBJECT_CHARS = 256
MAX_KID_CHARS = 256
# Query parameters that carry a token in the wild; any JWT-shaped value is refused too.
QUERY_TOKEN_PARAMETERS = frozenset(
    {"token", "access_token", "id_token", "jwt", "bearer", "auth", "authorization"}
)
BROWSER_FETCH_HEADERS = ("Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-Dest")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


class AuthError(Exception):
    """The handshake cannot be accepted; `status` and `code` go into the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Principal:
    user_id: str
    """The key quotas and run ownership use: the `sub` when the edge accepts a single issuer,
    else the issuer and the `sub` together (`user_key`), so one `sub` from two identity
    providers is two users."""
    expires_at: float
    """Unix seconds; the socket is closed with 4500 when it passes."""
    issuer: str | None = None
    """The token's `iss` claim, if any: a `refresh` token must come from the same issuer."""
    token: str = field(default="", repr=False, compare=False)
    """The verified JWT itself, forwarded to the planner when a run starts from a plan
    (docs/planner.md); kept out of `repr` so no log line can carry it."""
    subject: str = ""
    """The token's `sub`, as shown to the user (the `session` frame's `user`)."""

    @property
    def display_name(self) -> str:
        return self.subject or self.user_id


def user_key(signer: str, issuer: str | None, subject: str) -> str:
    """The user id of `subject` as vouched for by a signer: `["hs256", null, sub]` for the
    shared secret (whatever `iss` such a token claims, the secret's holder signed it), or
    `["jwks", issuer, sub]` for the JWKS the token's key came from (issuer null: the JWKS for
    any issuer). JSON, so no choice of issuer or subject makes two users' ids collide."""
    return json.dumps([signer, issuer, subject], ensure_ascii=False, separators=(",", ":"))


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("Sec-WebSocket-Protocol", "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def refuse_token_in_query(query: Iterable[tuple[str, str]]) -> None:
    """A token in the URL leaks into proxy, browser and server logs: refused, whatever else
    the handshake carries, so the client learns to stop doing it."""
    for name, value in query:
        if name.lower() in QUERY_TOKEN_PARAMETERS or JWT_SHAPE.search(value):
            raise AuthError(
                401,
                "token_in_query_refused",
                "never put a token in the URL; send it in the handshake as the subprotocol "
                "'bearer.<JWT>' or the header 'Authorization: Bearer <JWT>'",
            )


def check_origin(
    headers: Mapping[str, str], *, allowed: frozenset[str], any_origin: bool, allow_missing: bool
) -> None:
    """Exact match against the allowlist: `https://app.example.evil.com` is not
    `https://app.example`. Browsers always send Origin on a WebSocket handshake, so a request
    with a browser's `Sec-Fetch-*` headers and no Origin is refused even when `allow_missing`
    lets non-browser clients (the CLI, services) connect without one."""
    origin = headers.get("Origin")
    if origin is None:
        browser = any(name in headers for name in BROWSER_FETCH_HEADERS)
        if browser or not allow_missing:
            raise AuthError(403, "origin_required", "an Origin header is required")
    elif not any_origin and origin not in allowed:
        raise AuthError(403, "origin_not_allowed", "this Origin may not connect")


def token_from_handshake(headers: Mapping[str, str]) -> str:
    """The JWT from the `bearer.<jwt>` subprotocol (browsers) or `Authorization: Bearer`."""
    if SUBPROTOCOL not in offered_subprotocols(headers):
        raise AuthError(
            400, "subprotocol_required", f"offer the WebSocket subprotocol {SUBPROTOCOL!r}"
        )
    for item in offered_subprotocols(headers):
        if item.startswith(BEARER_PREFIX):
            return item[len(BEARER_PREFIX) :]
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    raise AuthError(
        401,
        "missing_token",
        "no token: offer the subprotocol 'bearer.<JWT>' or send 'Authorization: Bearer <JWT>'",
    )


class TokenVerifier:
    """Checks a JWT per RFC 8725: HS256 with the shared secret and/or RS256/ES256 with the keys
    of the JWKS of the token's issuer, looked up by `kid`. `exp`, `aud` and `sub` required;
    `nbf`/`iat` honoured with the leeway; `iss` checked when configured. Header parameters that
    point at keys (`jku`, `x5u`, `jwk`, `x5c`) are never read."""

    def __init__(
        self,
        *,
        secret: str | None,
        audience: str,
        issuer: str | None,
        leeway_s: float,
        jwks: Mapping[str | None, JwksKeys] | None = None,
    ) -> None:
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._jwks = dict(jwks or {})
        """Issuer -> its keys; the key None: one JWKS for any issuer (unchecked)."""
        # Each configured signer (the shared secret, each JWKS) is one source of identities.
        # With more than one, a `sub` alone is ambiguous: the user id is (signer, sub).
        self.several_issuers = (secret is not None) + len(self._jwks) > 1

    async def verify(self, token: str) -> Principal:
        """The token's principal, or `AuthError` with a documented status and code. Whatever
        the token holds, nothing else escapes: a hostile header or claim is a client's
        mistake (401), never a server error."""
        try:
            return await self._verify(token)
        except AuthError:
            raise
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, RecursionError) as e:
            # The checks below should catch every malformed field; if one slips through it is
            # still the client's token that is wrong. One line, no traceback, no token.
            log.warning("malformed token refused (%s escaped the checks)", type(e).__name__)
            raise AuthError(401, "invalid_token", "the token is malformed") from None

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid_token", "the token is malformed") from None
        # Header values are attacker-chosen JSON: a list or object `alg` must not reach a set
        # lookup (TypeError: unhashable) or a key table.
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise AuthError(401, "invalid_token", "the token's 'alg' header must be a string")
        if algorithm in HS_ALGORITHMS and self._secret is not None:
            claims = self._decode(token, self._secret, "HS256", self._issuer)
            signer: tuple[str, str | None] = ("hs256", None)
        elif algorithm in JWKS_ALGORITHMS and self._jwks:
            key, issuer = await self._jwks_key(token, header)
            claims = self._decode(token, key.key, key.algorithm_name, issuer)
            signer = ("jwks", issuer)
        else:
            raise AuthError(401, "invalid_token", "the token's algorithm is not accepted")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS:
            raise AuthError(
                401, "invalid_token", f"the token's 'sub' must be 1..{MAX_SUBJECT_CHARS} characters"
            )
        expires_at = claims["exp"]
        if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise AuthError(401, "invalid_token", "the token's 'exp' must be a number")
        # A far-future exp must not overflow the float the socket's expiry timer needs.
        issuer = claims.get("iss")
        return Principal(
            user_id=user_key(*signer, subject) if self.several_issuers else subject,
            expires_at=float(min(expires_at, 2**53)),
            issuer=issuer if isinstance(issuer, str) else None,
            token=token,
            subject=subject,
        )

    async def _jwks_key(self, token: str, header: dict[str, Any]) -> tuple[jwt.PyJWK, str | None]:
        """The key that may verify this token: from the JWKS of its (claimed) issuer, by kid.
        Verification then requires that very issuer, so a key is only good for its issuer."""
        try:
            claimed = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid_token", "the token is malformed") from None
        if isinstance(claimed, str) and claimed in self._jwks:
            keys, issuer = self._jwks[claimed], claimed
        elif None in self._jwks:
            keys, issuer = self._jwks[None], None
        else:
            raise AuthError(401, "invalid_token", "the token's issuer is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise AuthError(401, "invalid_token", "the token has no usable 'kid' header")
        try:
            return await keys.key(kid), issuer
        except UnknownSigningKey:
            raise AuthError(401, "invalid_token", "the token's signing key is not known") from None
        except JwksUnavailable:
            raise AuthError(
                503, "auth_unavailable", "the identity provider's keys are unreachable; retry"
            ) from None

    def _decode(self, token: str, key: Any, algorithm: str, issuer: str | None) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            problem = ("token_expired", "the token has expired; get a new one")
        except jwt.ImmatureSignatureError:
            problem = ("token_not_yet_valid", "the token is not valid yet (nbf/iat)")
        except jwt.InvalidAudienceError:
            problem = ("invalid_token", "the token is not for this audience")
        except jwt.InvalidIssuerError:
            problem = ("invalid_token", "the token's issuer is not accepted")
        except jwt.MissingRequiredClaimError as error:
            problem = ("invalid_token", f"the token lacks the {error.claim!r} claim")
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError):
            problem = ("invalid_token", "the token is malformed or its signature is wrong")
        else:
            return claims
        raise AuthError(401, *problem)


def mint_dev_token(
    sub: str,
    *,
    secret: str = DEV_JWT_SECRET,
    audience: str = JWT_AUDIENCE,
    ttl_s: int = DEV_TOKEN_TTL_S,
) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "aud": audience, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256"
    )


def dev_token(sub: str, *, ttl_s: int = DEV_TOKEN_TTL_S) -> str:
    """A token for `sub` that this deployment's edge accepts with HS256 (`dev_token_signing`)."""
    secret, audience = dev_token_signing()
    return mint_dev_token(sub, secret=secret, audience=audience, ttl_s=ttl_s)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.edge.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser(
        "mint", help="print a token signed with DOCGEN_JWT_SECRET (or the dev secret)"
    )
    mint.add_argument("--sub", default="dev", help="the user id (JWT sub)")
    mint.add_argument("--ttl", type=int, default=DEV_TOKEN_TTL_S, help="lifetime in seconds")
    args = parser.parse_args()
    print(dev_token(args.sub, ttl_s=args.ttl))


if __name__ == "__main__":
    main()
