"""WebSocket handshake authentication: where the JWT is taken from and how it is checked.

Also a command to mint development tokens: `python -m services.edge.auth mint --sub alice`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from services.edge.settings import DEV_JWT_SECRET

SUBPROTOCOL = "docgen.v1"
BEARER_PREFIX = "bearer."
# Fixed allowlist, never taken from the token header (RFC 8725 §3.1).
HS_ALGORITHMS = ["HS256"]


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
    expires_at: float
    """Unix seconds; the socket is closed with 4500 when it passes."""


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("Sec-WebSocket-Protocol", "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def token_from_handshake(headers: Mapping[str, str]) -> str:
    """The JWT from the `bearer.<jwt>` subprotocol (browsers) or `Authorization: Bearer`."""
    if SUBPROTOCOL not in offered_subprotocols(headers):
        raise AuthError(400, "subprotocol_required", f"offer the WebSocket subprotocol {SUBPROTOCOL!r}")
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
    def __init__(self, *, secret: str, audience: str, issuer: str | None, leeway_s: float) -> None:
        self._secret = secret
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=HS_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token_expired", "the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token_not_yet_valid", "the token is not valid yet (nbf/iat)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "invalid_token", "the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_token", "the token's issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(401, "invalid_token", f"the token lacks the {error.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid_token", "the token is malformed or its signature is wrong") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid_token", "the token's 'sub' must be a non-empty string")
        return Principal(user_id=subject, expires_at=float(claims["exp"]))


def mint_dev_token(
    sub: str, *, secret: str = DEV_JWT_SECRET, audience: str = "docgen", ttl_s: int = 12 * 3600
) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "aud": audience, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256"
    )


def main() -> None:
    import os

    parser = argparse.ArgumentParser(prog="python -m services.edge.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a token signed with DOCGEN_JWT_SECRET (or the dev secret)")
    mint.add_argument("--sub", default="dev", help="the user id (JWT sub)")
    mint.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    args = parser.parse_args()
    secret = os.environ.get("DOCGEN_JWT_SECRET") or DEV_JWT_SECRET
    audience = os.environ.get("DOCGEN_JWT_AUDIENCE") or "docgen"
    print(mint_dev_token(args.sub, secret=secret, audience=audience, ttl_s=args.ttl))


if __name__ == "__main__":
    main()
