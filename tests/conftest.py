"""Suite-wide set-up: shared fixtures, the Hypothesis profiles, and the guard that fails the run
if a process the tests started outlives them (docs/testing.md)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest
from hypothesis import HealthCheck, settings

from tests.support.processes import SESSION_MARKER, STARTED_BY, describe, session_leftovers
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack, start_stack

# Service processes started by tests must not fight over the default metrics ports.
os.environ.setdefault("DOCGEN_GENERATOR_METRICS_PORT", "0")
os.environ.setdefault("DOCGEN_SUMMARY_METRICS_PORT", "0")
os.environ.setdefault("DOCGEN_EDGE_METRICS_PORT", "0")

# Every process started from here on inherits the marker: see `no_process_outlives_the_suite`.
SESSION_ID = uuid.uuid4().hex
os.environ[SESSION_MARKER] = SESSION_ID

# How long processes already told to stop get to finish before they count as left behind.
LEFTOVER_GRACE_S = 5.0

# --- Hypothesis ------------------------------------------------------------------------------
# "ci" (the default, what `make test` runs): derandomized, so every run draws the same examples
# (each test's seed is derived from the test itself) and a failure replays as is; no example
# database, so nothing from an earlier run changes what runs; no per-example deadline, which a
# busy machine would trip. "explore": random examples, a seed printed in the header,
# `--hypothesis-seed=N` replays it.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import core

    # A SIGTERM (a CI job cancelled or timed out, `kill`) ends the run as Ctrl-C does: pytest
    # then still tears every fixture down at session end, so the processes tests started are
    # stopped and the leftover guard below runs. Without this, SIGTERM killed pytest outright
    # and left every child of the running test alive (their own sessions are not pytest's).
    signal.signal(signal.SIGTERM, _interrupted)

    seed = config.getoption("--hypothesis-seed", None)
    if seed is None and not settings.default.derandomize:
        # Hypothesis' own plugin does the same with --hypothesis-seed; here the seed is chosen
        # for the user so an exploring run can always be replayed.
        seed = int.from_bytes(os.urandom(4), "big")
        core.global_force_seed = seed
    config.stash[_SEED] = seed


_SEED = pytest.StashKey[object]()


def pytest_unconfigure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # everything is torn down by now


def _hypothesis_line(config: pytest.Config) -> str:
    name = settings.get_current_profile_name()
    if settings.default.derandomize:
        how = "derandomized (each test's seed comes from the test itself: reruns draw the same)"
    else:
        how = f"seed {config.stash[_SEED]} (replay: --hypothesis-seed={config.stash[_SEED]})"
    return f"hypothesis profile {name!r}: {how}"


def pytest_report_header(config: pytest.Config) -> str:
    return _hypothesis_line(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also at the end, where `make test` (-q, no header) and a reader of a failure look.
    terminalreporter.write_line(_hypothesis_line(terminalreporter.config))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of this test: a process started now is attributed to it.
    os.environ[STARTED_BY] = item.nodeid


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite() -> Iterator[None]:
    """Fails the run if a process the suite started is still alive at the end, naming it (and
    the test during which it started), then kills it so nothing is left behind either way."""
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (leftovers := session_leftovers(SESSION_ID)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not leftovers:
        return
    lines = []
    for process in leftovers:
        try:
            started_by = process.environ().get(STARTED_BY, "?")
        except psutil.Error:
            started_by = "?"
        lines.append(f"  {describe(process)}  (started during {started_by})")
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=5)
    pytest.fail(
        f"{len(leftovers)} process(es) started by the tests outlived them (now killed):\n"
        + "\n".join(lines),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (a missing binary fails the tests that need it)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def runlog_url(request: pytest.FixtureRequest) -> str | None:
    """Runs a test once per run-log backend: None (in memory, the default) and an emptied
    Redis, passed on as `start_stack(..., runlog_url=...)`."""
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    stack = await start_stack()
    try:
        yield stack
    finally:
        await stack.close()
