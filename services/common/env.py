"""Typed reads of environment variables that fail loudly, naming the variable.

Every variable read here may instead be given as a file: `NAME_FILE=/path` reads the value
from that file (the convention of Docker and Kubernetes secrets, so that a secret is mounted
as a file and never appears in the process environment, `/proc/<pid>/environ` or a pod
spec). One trailing newline is dropped (`echo secret > file`); an empty file counts as
unset. Setting both `NAME` and `NAME_FILE` is an error, as is a file that cannot be read.
"""

from __future__ import annotations

import os

FILE_SUFFIX = "_FILE"


class ConfigError(ValueError):
    """An environment variable is set to something unusable."""


def env_raw(name: str) -> str | None:
    """The value of `name`, from the environment or from the file named by `name_FILE`."""
    value = os.environ.get(name)
    path = os.environ.get(name + FILE_SUFFIX)
    if not path:
        return value
    if value:
        raise ConfigError(f"set {name} or {name}{FILE_SUFFIX}, not both")
    try:
        with open(path, encoding="utf-8") as file:
            content = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{name}{FILE_SUFFIX}={path!r} cannot be read ({reason})") from None
    return content.removesuffix("\n").removesuffix("\r")


def env_str(name: str, default: str) -> str:
    value = env_raw(name)
    return default if value is None or value == "" else value


def env_opt(name: str) -> str | None:
    value = env_raw(name)
    return value or None


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_raw(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = env_raw(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be <= {maximum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_raw(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env_raw(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())
