"""Measurement: accuracy metrics and evaluation, latency, the machine fingerprint."""
