from aiohttp import web

from services.common.logs import configure_logging
from services.common.otel import configure_tracing, shutdown_tracing
from services.edge.app import create_app, server_options
from services.edge.settings import EdgeSettings

configure_logging("edge")
configure_tracing("edge")
settings = EdgeSettings.from_env()
# shutdown_timeout: how long open sockets get to close after on_shutdown told them to.
web.run_app(
    create_app(settings),
    host=settings.host,
    port=settings.port,
    shutdown_timeout=5.0,
    **server_options(settings),
    print=lambda *_: None,
)
shutdown_tracing()
