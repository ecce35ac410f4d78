"""Logging set-up shared by the services: one line per event, level from DOCGEN_LOG_LEVEL."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(service: str) -> None:
    level = os.environ.get("DOCGEN_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request line at INFO, which is noise per section.
    logging.getLogger("httpx").setLevel(logging.WARNING)
