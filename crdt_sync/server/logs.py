"""Tokens never reach the logs: `?token=` in a logged URL is written as `token=***`.

Websocket clients that cannot set headers (browsers, y-websocket) pass their token in the URL,
and uvicorn's access and connection logs print URLs with their query. A log file is read by
more people, and kept longer, than a token should be.
"""

from __future__ import annotations

import logging
import re

TOKEN_IN_URL = re.compile(r"(?i)([?&]token=)[^&\s\"']+")
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    return TOKEN_IN_URL.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Rewrites a record whose message holds a token in a URL; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            # uvicorn's access formatter reads the URL back from args: give it the clean one.
            record.args = tuple(
                redact(arg) if isinstance(arg, str) else arg for arg in _args(record)
            )
            if not record.args:
                record.msg = cleaned
        return True


def _args(record: logging.LogRecord) -> tuple[object, ...]:
    if isinstance(record.args, tuple):
        return record.args
    return ()


def redact_tokens_in_server_logs() -> None:
    """Install the filter on uvicorn's loggers (after uvicorn configured logging)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
