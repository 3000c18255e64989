"""visiongate core library: data, models, metrics, gates, and the DVC/MLflow edges.

Importable without Prefect; only versioning.py touches DVC and only tracking.py /
registry.py touch MLflow.
"""

__version__ = "0.1.0"
