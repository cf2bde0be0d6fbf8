"""Serve ``arun_batch`` as a deployment (the served-deployment cancellation test).

Usage: python serve_run_batch.py DEPLOYMENT_NAME
The Prefect API comes from the environment (``PREFECT_API_URL``).
"""

from __future__ import annotations

import sys

from prefect.deployments.runner import EntrypointType

from prefect_agent_runs.flows import arun_batch

if __name__ == "__main__":
    arun_batch.serve(
        name=sys.argv[1],
        entrypoint_type=EntrypointType.MODULE_PATH,
        enforce_parameter_schema=False,
        print_starting_message=True,
    )
