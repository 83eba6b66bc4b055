"""Credentials never leave the process in text: `user:password@` in any URL is masked before it is
logged, printed or written to a report. One place, used by the CLI's error line, its logging handler
and the run report."""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# scheme://userinfo@host: userinfo is everything up to the last '@' before the path; '/' cannot be in it
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"]+)@")


def redact(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Masks URL credentials in log records (message and arguments) before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
