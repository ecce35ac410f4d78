"""`RunStore` on Redis Streams, shared by every generator: any generator serves a resume or a
cancel, and a run outlives the generator writing it (another one takes it over when its lease
lapses).

Keys of one run (`{run_id}` is a cluster hash tag: a run's keys share a slot):

    docgen:run:{id}:events    stream; entry id `0-<seq>`, field `e` = a serialized RunEvent
    docgen:run:{id}           hash: user, status, outline, request_id, trace_id, created_ms,
                              writer (lease token), cancel, summary, summary_through,
                              summary_version
    docgen:run:{id}:lease     the writing generator's token; PX run_lease_s, renewed
    docgen:run:{id}:followed  a non-writing generator has a follower; PX max(grace, lease)
    docgen:runs:active        set of unfinished run ids, scanned for lapsed leases
    docgen:runs:cancel        pub/sub channel: run ids whose user asked to cancel

No event is lost or written twice: appends are a Lua script that checks the caller still holds
the lease and then XADDs with explicit ids `0-<seq>`, which Redis refuses unless they follow the
stream's last one. A retry after a lost reply skips the events already stored, once it has
checked they are the same bytes. A writer told that it lost the lease stops at once; its
unstored events are dropped (nobody saw them) and the new writer restarts the section that was
being written.

Modules: `keys.py` (this layout and the scripts), `store.py` (`RedisRunStore`: create, store,
lookup, followers), `log.py` (`RedisRunLog`, a writer's queue of appends), `reader.py`
(replay and live follow), `leases.py` (heartbeat and takeover), `cancels.py` (cancel relay).
"""
