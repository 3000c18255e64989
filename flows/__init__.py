"""Prefect flows: the retrain chain and the command line."""

import os

# Before Prefect is imported: no telemetry (it also avoids "database is locked" noise
# from the ephemeral server's first start).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow reads DO_NOT_TRACK only as "true"
# The ephemeral API server (no PREFECT_API_URL set) migrates its database on first start;
# on a busy 2-core machine that can pass Prefect's 20 s default, failing the whole run.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# MLflow's client retries each call 7 times with exponential backoff (minutes against a
# server that is down); the flow's I/O tasks retry on top of that (tasks/tracking.py).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
