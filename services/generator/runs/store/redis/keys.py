"""The Redis layout of the run store: key names, the Lua scripts that keep appends and leases
exact, and the errors that mean "Redis is unreachable right now" (see `__init__.py`)."""

from __future__ import annotations

import hashlib

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.generator.errors import RunLogUnavailable

ACTIVE_RUNS_KEY = "docgen:runs:active"
CANCEL_CHANNEL = "docgen:runs:cancel"
# While a run is going its keys expire this long after the last write or lease renewal: only
# a run that no generator could take over for an hour (all of them gone) disappears this way.
ORPHAN_TTL_S = 3600
# Events sent to Redis per append script; a backlog (Redis was slow) goes in several.
APPEND_BATCH = 256
READ_PAGE = 512
# A blocked XREAD wakes up this often to check that the run still exists.
FOLLOW_BLOCK_MS = 1000
# Errors that mean "Redis is unreachable right now", retried for `retry_s`.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: events, meta, lease, active set. ARGV: token, run id, first seq, n, n payloads,
# m, m field/value pairs of state, final status ('' while running), ttl ms, orphan ttl ms.
# Returns the last stored seq, or -1 when the caller does not hold the lease. A batch that
# starts with events the stream already has is a retry after a lost reply (the writer queued
# more events meanwhile, so the retry can be longer): the stored ones are skipped if they are
# byte for byte the same, and nothing is written twice. A stored event that differs from its
# retry, or a stream already past the batch, fails the script before anything is written.
APPEND_SCRIPT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local first = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top_seq = 0
if top[1] then top_seq = tonumber(string.match(top[1][1], '%-(%d+)$')) end
local skip = 0
if top_seq >= first then
  if top_seq > first + n - 1 then
    return redis.error_reply('ERR the run log is already past this batch')
  end
  local stored = redis.call('XRANGE', KEYS[1], '0-' .. first, '0-' .. top_seq)
  for i, entry in ipairs(stored) do
    if entry[2][2] ~= ARGV[4 + i] then
      return redis.error_reply('ERR a stored event differs from its retry')
    end
  end
  skip = top_seq - first + 1
end
for i = skip + 1, n do
  redis.call('XADD', KEYS[1], '0-' .. (first + i - 1), 'e', ARGV[4 + i])
end
local k = 5 + n
local m = tonumber(ARGV[k])
for j = 1, m do
  redis.call('HSET', KEYS[2], ARGV[k + 2 * j - 1], ARGV[k + 2 * j])
end
k = k + 2 * m + 1
if ARGV[k] ~= '' then
  redis.call('HSET', KEYS[2], 'status', ARGV[k])
  redis.call('PEXPIRE', KEYS[1], ARGV[k + 1])
  redis.call('PEXPIRE', KEYS[2], ARGV[k + 1])
  redis.call('SREM', KEYS[4], ARGV[2])
  redis.call('DEL', KEYS[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[k + 2])
  redis.call('PEXPIRE', KEYS[2], ARGV[k + 2])
end
return first + n - 1
"""

# KEYS: lease, meta, events. ARGV: token, lease ms, orphan ttl ms.
# Returns -1: the lease is lost; 1: held, and the run's user asked to cancel it; 0: held.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if redis.call('HGET', KEYS[2], 'cancel') == '1' then return 1 end
return 0
"""

# KEYS: lease. ARGV: token. Deletes the lease only if it is still the caller's.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: meta. ARGV: channel, run id. Marks the run cancelled (if it still exists) and tells
# its writer at once.
CANCEL_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'cancel', '1') end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""


# A user's unfinished runs across every generator (`DOCGEN_MAX_RUNS_PER_USER`): a sorted set
# of run ids scored by lease expiry (ms, Redis's clock). Checked and added in one script, so
# two generators cannot both take the last slot; the writer's heartbeat renews its entries, and
# an entry whose writer died without ending the run lapses with its lease.
RESERVE_USER_RUN_SCRIPT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def user_runs_key(user_id: str) -> str:
    # Hashed: a user id is up to a few hundred characters of anything (issuer + sub).
    return f"docgen:user:{hashlib.sha256(user_id.encode()).hexdigest()[:32]}:runs"


def events_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:events"


def meta_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}"


def lease_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:lease"


def followed_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:followed"


def entry_id(seq: int) -> str:
    return f"0-{seq}"


def seq_of(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.rsplit("-", 1)[1])


class LeaseLost(Exception):
    """The append script found another writer's lease: this writer must stop."""


def unavailable(error: BaseException) -> RunLogUnavailable:
    return RunLogUnavailable(
        f"the run store is unreachable ({type(error).__name__}); retry shortly"
    )
