"""A fast stand-in LLM for the relay benchmark: an OpenAI-compatible chat-completions server that
streams `max_tokens` tokens at a fixed rate, each token carrying its send time as `|<unix s>`,
so a client's receive time minus that stamp is the relay delay through every hop in between. A
prompt that says "stream N tokens" (the bench's section brief) gets at most N.

Run: `python -m bench.stamping_llm --port 8090 --tokens-per-s 30`.

Speaks just enough HTTP/1.1 for the `openai` client (keep-alive, chunked responses) on a bare
asyncio protocol, and schedules every stream's tokens on the event loop's timer heap: hundreds
of streams cost it little CPU, so it does not starve the processes being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time
from dataclasses import dataclass

WORDS = (
    " bread",
    " flour",
    " water",
    " salt",
    " yeast",
    " oven",
    " crust",
    " crumb",
    " dough",
    " proof",
    " knead",
    " shape",
    " score",
    " bake",
    " cool",
    " slice",
)
MODEL = "stamping"
STREAM_TOKENS = re.compile(r"stream (\d+) tokens")
"""How a prompt asks for a stream's length (bench/wsclient.py's one-section outline)."""


@dataclass(frozen=True)
class StampingConfig:
    tokens_per_s: float = 30.0
    """Rate of every stream, tokens per second."""
    default_tokens: int = 300
    """Tokens of a request without `max_tokens`."""
    ttft_s: float = 0.0
    """Delay before the first token."""


def _sse(payload: str) -> bytes:
    """One SSE event as one HTTP chunk."""
    data = f"data: {payload}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream:
    """The tokens of one response, each written at its scheduled time (no drift)."""

    def __init__(
        self,
        protocol: _HttpProtocol,
        *,
        tokens: int,
        period_s: float,
        include_usage: bool,
        ttft_s: float,
        keep_alive: bool,
    ) -> None:
        self._protocol = protocol
        self._tokens = tokens
        self._period_s = period_s
        self._include_usage = include_usage
        self._keep_alive = keep_alive
        self._sent = 0
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time() + ttft_s
        # Everything of a chunk before its delta; only the delta changes from token to token.
        self._prefix = (
            f'{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":"{MODEL}","choices":[{{"index":0,"delta":'
        )
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._start, self._emit)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _emit(self) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            self._timer = None
            return
        if self._sent < self._tokens:
            word = WORDS[self._sent % len(WORDS)]
            transport.write(
                _sse(
                    f'{self._prefix}{{"content":"{word}|{time.time():.6f}"}},'
                    '"finish_reason":null}]}'
                )
            )
            self._sent += 1
            if self._sent < self._tokens:
                self._timer = self._loop.call_at(
                    self._start + self._sent * self._period_s, self._emit
                )
                return
        self._timer = None
        tail = _sse(f'{self._prefix}{{}},"finish_reason":"length"}}]}}')
        if self._include_usage:
            tail += _sse(
                json.dumps(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": MODEL,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 1,
                            "completion_tokens": self._tokens,
                            "total_tokens": 1 + self._tokens,
                        },
                    }
                )
            )
        transport.write(tail + _sse("[DONE]") + b"0\r\n\r\n")
        self._protocol.response_done(self._keep_alive)


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, config: StampingConfig) -> None:
        self._config = config
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._stream: _Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._parse()

    def response_done(self, keep_alive: bool) -> None:
        self._stream = None
        if not keep_alive and self.transport is not None:
            self.transport.close()
            return
        self._parse()

    def _parse(self) -> None:
        while self._stream is None and self.transport is not None:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, *_ = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < head_end + 4 + length:
                return
            body = self._buffer[head_end + 4 : head_end + 4 + length]
            self._buffer = self._buffer[head_end + 4 + length :]
            keep_alive = headers.get("connection", "").lower() != "close"
            self._handle(method, path.split("?")[0], body, keep_alive)

    def _reply(self, status: str, payload: object, keep_alive: bool) -> None:
        assert self.transport is not None
        body = json.dumps(payload).encode()
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if not keep_alive:
            self.transport.close()

    def _handle(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        if method == "GET" and path in ("/v1/models", "/models", "/health"):
            self._reply(
                "200 OK", {"object": "list", "data": [{"id": MODEL, "object": "model"}]}, keep_alive
            )
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
            self._reply(
                "404 Not Found", {"error": {"message": f"no route {method} {path}"}}, keep_alive
            )
            return
        try:
            request = json.loads(body or b"{}")
            tokens = int(request.get("max_tokens") or self._config.default_tokens)
            asked = STREAM_TOKENS.search(json.dumps(request.get("messages") or []))
            if asked:  # the bench's brief names the stream's length (bench/wsclient.py)
                tokens = min(tokens, int(asked.group(1)))
        except (ValueError, TypeError):
            self._reply("400 Bad Request", {"error": {"message": "bad JSON body"}}, keep_alive)
            return
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self._stream = _Stream(
            self,
            tokens=max(1, tokens),
            period_s=1.0 / self._config.tokens_per_s,
            include_usage=bool((request.get("stream_options") or {}).get("include_usage")),
            ttft_s=self._config.ttft_s,
            keep_alive=keep_alive,
        )


async def serve(host: str, port: int, config: StampingConfig) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HttpProtocol(config), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"stamping LLM on http://{host}:{port}/v1, {config.tokens_per_s:g} tokens/s", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stamping_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tokens-per-s", type=float, default=30.0)
    parser.add_argument("--default-tokens", type=int, default=300)
    parser.add_argument("--ttft-s", type=float, default=0.0)
    args = parser.parse_args()
    config = StampingConfig(
        tokens_per_s=args.tokens_per_s, default_tokens=args.default_tokens, ttft_s=args.ttft_s
    )
    asyncio.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
