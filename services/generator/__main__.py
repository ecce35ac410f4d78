import asyncio

from services.generator.server import serve

asyncio.run(serve())
