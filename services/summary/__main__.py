import asyncio

from services.summary.server import serve

asyncio.run(serve())
