"""visiongate core library: data, models, metrics, gates, and the DVC/MLflow edges.

Importable without Prefect; only versioning.py touches DVC and only tracking.py /
registry.py / serving.py touch MLflow.
"""

import os

# MLflow sends usage telemetry unless told not to (it reads DO_NOT_TRACK only as "true").
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# albumentations asks pypi.org for a newer release on every import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
