"""Logging set-up: one format for every command and worker. Messages never carry PHI."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """Send records to stderr as ``time level logger: message``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
