"""Benchmarks of prefect-agent-runs against the official SDKs and common recipes.

One command: ``python -m benchmarks`` (see :mod:`benchmarks.run`). Never run in tests.
"""
