"""The WebSocket contract's JSON Schemas, installed as the package `services.contract`.

Only a marker: pyproject.toml maps this folder into the package so the edge can load the
schemas with importlib.resources from a wheel as well as from a checkout.
"""
