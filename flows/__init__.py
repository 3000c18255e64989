"""Prefect flows: the retrain chain and the command line."""

import os

# Before Prefect is imported: no telemetry (it also avoids "database is locked" noise
# from the ephemeral server's first start).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
