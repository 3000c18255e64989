"""Prefect task wrappers: load inputs, call one visiongate function, return small values."""
