"""Validation of the names clients choose (pools, sessions, splits, annotators, request ids).

Names become table names and filter literals in the store, so they are restricted to a
safe alphabet: no path separators, quotes or absolute paths ever reach the file system.
"""

from __future__ import annotations

import re

from proxal.runtime.errors import InvalidArgumentError

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ANNOTATOR = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _check(pattern: re.Pattern[str], value: str, what: str, rule: str) -> str:
    """`value` if the whole of it matches `pattern` (a trailing newline does not), else
    InvalidArgumentError saying `what` is invalid and the `rule`."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else value
        raise InvalidArgumentError(f"{what} {shown!r} is invalid: {rule}")
    return value


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid pool, session or split name, else raise."""
    return _check(
        _NAME,
        value,
        f"{kind} name",
        "use 1-64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit",
    )


def check_annotator(value: str) -> str:
    """Return `value` if it is a valid annotator name, else raise InvalidArgumentError."""
    return _check(
        _ANNOTATOR, value, "annotator", "use 1-64 characters from A-Z, a-z, 0-9 and '._@-'"
    )


def check_request_id(value: str) -> str:
    """Return `value` if it is a valid client request id (e.g. a UUID), else raise."""
    return _check(
        _REQUEST_ID,
        value,
        "request_id",
        "every write needs a request id of 1-128 characters from A-Z, a-z, 0-9 and '._:-' "
        "(e.g. a UUID), the same one on retries",
    )
