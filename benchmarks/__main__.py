"""``python -m benchmarks``: run every contender on every workload (see benchmarks/run.py)."""

from benchmarks.run import main

main()
