"""The RS256/ES256 signing keys of one identity provider, from its JWKS URL.

Keys are served from memory. The network is touched only when the cached set is older than
`cache_s` or a token names an unknown `kid`, and then at most once per `min_refresh_s`, so
forged kids cannot make the edge hammer the provider. The fetch (pyjwt's `PyJWKClient`, plain
urllib, redirects refused) runs in a worker thread: it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jwt import PyJWK, PyJWKClient

log = logging.getLogger(__name__)

# Fixed allowlist (RFC 8725 §3.1). A JWKS key of any other algorithm is ignored, notably
# symmetric ("oct") keys: a published HS256 key would let anyone sign tokens.
ALGORITHMS = frozenset({"RS256", "ES256"})


class UnknownSigningKey(Exception):
    """No key of this JWKS has the token's `kid` (after a refresh, when one was allowed)."""


class JwksUnavailable(Exception):
    """The JWKS has never been fetched successfully: no token can be checked yet."""


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        cache_s: float,
        min_refresh_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        self._cache_s = cache_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Fetch attempts so far (tests and diagnostics)."""

    async def key(self, kid: str) -> PyJWK:
        if self._fresh() and kid in self._keys:
            return self._keys[kid]
        # One fetch at a time: handshakes arriving meanwhile wait for it instead of piling up.
        async with self._lock:
            if self._may_fetch() and not (self._fresh() and kid in self._keys):
                await self._fetch()
            found = self._keys.get(kid)
        if found is not None:
            return found
        if self._fetched_at is None:
            raise JwksUnavailable(f"the JWKS at {self.url} could not be fetched yet")
        raise UnknownSigningKey(kid)

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._cache_s

    def _may_fetch(self) -> bool:
        last = self._attempted_at
        return last is None or self._clock() - last >= self._min_refresh_s

    async def _fetch(self) -> None:
        attempted = self._attempted_at = self._clock()
        self.fetches += 1
        try:
            jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
        except Exception as error:
            # Keep serving the keys fetched before: an outage of the provider should not log
            # everybody out. The next attempt waits for min_refresh_s.
            log.warning(
                "JWKS %s could not be fetched (%s: %s); %s",
                self.url,
                type(error).__name__,
                error,
                "keeping the keys fetched before" if self._keys else "no keys yet",
            )
            return
        self._keys = {
            key.key_id: key
            for key in jwk_set.keys
            if key.key_id
            and key.public_key_use in (None, "sig")
            and key.algorithm_name in ALGORITHMS
        }
        self._fetched_at = attempted
        log.info("JWKS %s fetched: %d usable signing keys", self.url, len(self._keys))
