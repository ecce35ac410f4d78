from services.common import event_loop
from services.summary.server import serve

event_loop.run(serve())
