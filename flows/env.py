"""Environment defaults that must be in place before ``prefect`` is imported (offline, quiet, patient start-up)."""

from __future__ import annotations

import os

__all__ = ["ENV_DEFAULTS", "apply_env_defaults"]

ENV_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_env_defaults() -> None:
    """Set every ``ENV_DEFAULTS`` entry that the environment does not already set."""
    for key, val in ENV_DEFAULTS.items():
        os.environ.setdefault(key, val)
