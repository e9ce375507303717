"""Log records captured in memory, uvicorn's included, for tests that check what reached a
log."""

from __future__ import annotations

import logging
from collections.abc import Callable


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


def watch_uvicorn(recorder: logging.Handler) -> Callable[[], None]:
    """Record uvicorn's lines, its access lines at info, until the returned call."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(recorder)
        logger.setLevel(min(logger.level or logging.INFO, logging.INFO))

    def restore() -> None:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(recorder)
            logger.setLevel(level)

    return restore
