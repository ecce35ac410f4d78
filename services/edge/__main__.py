import asyncio
import signal

from aiohttp import web

from services.common import event_loop, metrics
from services.common.gc_tuning import tune_gc_after_startup
from services.common.logs import configure_logging
from services.common.otel import configure_tracing, shutdown_tracing
from services.edge.app import create_app, edge_site, server_options
from services.edge.settings import EdgeSettings

configure_logging("edge")
configure_tracing("edge")
settings = EdgeSettings.from_env()
app = create_app(settings)


async def _tune_gc(_app: web.Application) -> None:
    tune_gc_after_startup()


async def _serve_metrics(_app: web.Application) -> None:
    # Not a route of the public app: its own (loopback) port, which no Ingress routes.
    metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)


async def serve() -> None:
    # Not `web.run_app`: the edge's site guards connections before aiohttp reads them
    # (`edge_site`), which run_app's own sites cannot. shutdown_timeout: how long open
    # sockets get to close after on_shutdown told them to.
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=5.0, **server_options(settings)
    )
    await runner.setup()
    try:
        await edge_site(runner, settings.host, settings.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


app.on_startup.append(_tune_gc)
app.on_startup.append(_serve_metrics)
event_loop.run(serve())
shutdown_tracing()
