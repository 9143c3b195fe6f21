"""Compatibility re-export of :mod:`config` (the typed parameters moved there); new code imports ``config``."""

from __future__ import annotations

from config import *  # noqa: F401,F403
from config import __all__  # noqa: F401
