"""Prefect flows, one per DVC stage; ``python -m flows <stage>`` is the CLI (this package must not import prefect)."""
