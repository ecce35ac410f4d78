from services.common import event_loop
from services.generator.server import serve

event_loop.run(serve())
