"""Why a `docgen` command stops early, and the exit code each reason maps to.

CliError             -- base: `exit_code` and a one-line `message` for stderr
├── RunFailed        -- 1: the run ended failed (or cancelled by the server), or the text
│                         the client assembled is not what the server wrote
├── UsageError       -- 2: bad arguments, unreadable outline, outline or run id refused
├── AuthRefused      -- 3: the edge refused the token (HTTP 401/403, close code 4500)
├── EdgeUnreachable  -- 4: no connection to the edge, or it was lost for good
└── Interrupted      -- 130: Ctrl-C
"""

from __future__ import annotations


class CliError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunFailed(CliError):
    exit_code = 1


class UsageError(CliError):
    exit_code = 2


class AuthRefused(CliError):
    exit_code = 3


class EdgeUnreachable(CliError):
    exit_code = 4

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient
        """Worth retrying as is (refused, reset, 503); False when only a new --url can help."""


class Interrupted(CliError):
    exit_code = 130
