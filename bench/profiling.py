"""Where a process's CPU goes, from py-spy's collapsed stacks (`--format raw`, native frames
included where py-spy can unwind them).

Samples of threads blocked in a wait (epoll_wait, a lock, a queue) are set apart first: in
native mode py-spy does not always recognise them as idle. Each remaining (busy) sample is
charged to the kernel when a socket syscall is its innermost frame (gRPC's, or the asyncio
sockets' of the WebSocket and the LLM's HTTP), else to the innermost frame that
belongs to a known component (JSON, protobuf, gRPC, the openai/HTTP client, aiohttp, the event
loop, docgen's own code, ...). Docgen's functions also get their inclusive share, and samples
are split by thread (the asyncio loop thread, gRPC's own threads, others)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (component, patterns): a frame belongs to the first component with a pattern in it.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("protobuf", ("google/protobuf", "_pb2", "upb_", "PyUpb", "upb/", "_message.abi3")),
    ("json encode/decode", ("json/", "_json", "orjson")),
    ("jsonschema (client frame checks)", ("jsonschema", "referencing/", "rpds")),
    ("jwt / crypto", ("jwt/", "cryptography", "hmac.py", "hashlib")),
    ("grpc", ("grpc/", "grpc_", "cygrpc", "grpc::", "grpc_core")),
    ("openai + http client", ("openai/", "httpx", "httpcore", "h11/", "anyio/", "sniffio")),
    ("aiohttp (HTTP/WebSocket)", ("aiohttp/", "multidict", "yarl/", "propcache", "frozenlist")),
    ("logging", ("logging/", "pythonjsonlogger")),
    ("prometheus metrics", ("prometheus_client",)),
    ("asyncio event loop", ("asyncio/", "selectors.py", "uvloop", "contextvars")),
)
DOCGEN = "docgen code"
GRPC_SYSCALLS = "grpc: kernel send/recv/wake-up syscalls"
SOCKET_SYSCALLS = "asyncio sockets (WebSocket, LLM HTTP): kernel send/recv"
OTHER = "other (interpreter, libc)"
# Innermost native frames of a thread that waits rather than computes.
WAITING_LEAVES = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "poll",
        "ppoll",
        "select",
        "pselect",
        "nanosleep",
        "clock_nanosleep",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "futex_wait",
        "__futex_abstimed_wait_common",
    }
)
# Any of these in a stack: the thread is blocked on a lock or a queue (an idle pool worker).
WAITING_FRAMES = ("PyThread_acquire_lock_timed", "_queue_SimpleQueue_get", "acquire_timed")
SOCKET_LEAVES = frozenset(
    {"send", "sendmsg", "sendto", "recv", "recvmsg", "recvfrom", "write", "writev", "read", "readv"}
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def text(self) -> str:
        return f"{self.function} ({self.file})"


def parse_frame(raw: str) -> Frame:
    match = _FRAME.match(raw.strip())
    if match is None:
        return Frame(raw.strip(), "")
    return Frame(match["function"], match["file"])


def is_docgen(frame: Frame) -> bool:
    return frame.file.startswith("services/") or (
        "/services/" in frame.file and "site-packages" not in frame.file
    )


def component_of(frame: Frame) -> str | None:
    if is_docgen(frame):
        return DOCGEN
    text = frame.text
    for name, patterns in COMPONENTS:
        if any(p in text for p in patterns):
            return name
    return None


def read_collapsed(path: Path) -> list[tuple[list[Frame], int]]:
    """py-spy raw output: one `root;...;leaf count` line per distinct stack."""
    stacks: list[tuple[list[Frame], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def is_waiting(frames: list[Frame]) -> bool:
    if frames and frames[-1].function in WAITING_LEAVES:
        return True
    return any(marker in f.function for f in frames for marker in WAITING_FRAMES)


def thread_of(frames: list[Frame]) -> str:
    if not any(f.function.startswith("Thread._bootstrap") for f in frames):
        return "main (asyncio loop)"
    if any("cygrpc" in f.file or "grpc" in f.file for f in frames):
        return "grpc threads"
    return "other threads"


def owner_of(frames: list[Frame]) -> str:
    caller = next((c for f in reversed(frames) if (c := component_of(f)) is not None), OTHER)
    if frames and frames[-1].function in SOCKET_LEAVES:
        # The syscall itself, charged apart, but named after whoever made it.
        return GRPC_SYSCALLS if caller == "grpc" else SOCKET_SYSCALLS
    return caller


def attribute(stacks: list[tuple[list[Frame], int]], *, top: int = 12) -> dict[str, Any]:
    total = sum(count for _, count in stacks)
    waiting = 0
    components: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        if is_waiting(frames):
            waiting += count
            continue
        components[owner_of(frames)] += count
        threads[thread_of(frames)] += count
        if frames:
            leaves[_short(frames[-1])] += count
        for key in {_short(f) for f in frames if is_docgen(f)}:
            inclusive[key] += count
    busy = total - waiting

    def share(n: int) -> float:
        return round(n / busy, 4) if busy else 0.0

    return {
        "samples": total,
        "busy_samples": busy,
        "waiting_share": round(waiting / total, 4) if total else None,
        "components": {name: share(n) for name, n in components.most_common()},
        "threads": {name: share(n) for name, n in threads.most_common()},
        "docgen_inclusive": {name: share(n) for name, n in inclusive.most_common(top)},
        "top_leaves": {name: share(n) for name, n in leaves.most_common(top)},
    }


def _short(frame: Frame) -> str:
    file = frame.file
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame.function} ({file})"


async def record(
    py_spy: str, pid: int, seconds: float, output: Path, *, native: bool, rate: int = 100
) -> tuple[int | None, str]:
    """Runs `py-spy record` on a process; returns its exit code and output. Native unwinding
    pauses the process for each sample; without it, sampling does not pause it."""
    argv = [
        py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--output", str(output),
    ]  # fmt: skip
    argv.append("--native" if native else "--nonblocking")
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode, out.decode(errors="replace")
