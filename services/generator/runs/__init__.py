"""The runs a generator owns and where their event logs live.

    registry.py          RunRegistry: start, find, cancel, grace period, expiry, shutdown
    log.py               RunReader / RunWriter (the log's two faces), EventSequencer, MemoryRunLog
    store/port.py        RunStore: the port the registry talks to, and what a store hands back
    store/memory.py      MemoryRunStore: runs live and die with this process (the default)
    store/redis/         RedisRunStore: Redis Streams shared by every generator

Modules here import downwards only (registry -> store -> log); this file imports nothing, so
importing `runs.log` never drags the registry in.
"""
