from aiohttp import web

from services.common import metrics
from services.common.gc_tuning import tune_gc_after_startup
from services.common.logs import configure_logging
from services.common.otel import configure_tracing, shutdown_tracing
from services.edge.app import create_app, server_options
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


app.on_startup.append(_tune_gc)
app.on_startup.append(_serve_metrics)
# shutdown_timeout: how long open sockets get to close after on_shutdown told them to.
web.run_app(
    app,
    host=settings.host,
    port=settings.port,
    shutdown_timeout=5.0,
    **server_options(settings),
    print=lambda *_: None,
)
shutdown_tracing()
