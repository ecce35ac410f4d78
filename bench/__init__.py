"""`make bench`: docgen's performance measured against real processes on loopback, each
scenario beside its no-hop baseline (see docs/performance.md). Run `python -m bench.run`."""
