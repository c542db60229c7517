"""Validation of the names clients choose (pools, sessions, splits, annotators, request ids).

Names become table names and filter literals in the store, so they are restricted to a
safe alphabet: no path separators, quotes or absolute paths ever reach the file system.
"""

from __future__ import annotations

import re

from proxal_runtime.errors import InvalidArgumentError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid name, else raise InvalidArgumentError."""
    if not _NAME.match(value or ""):
        raise InvalidArgumentError(
            f"{kind} name {value!r} is invalid: use 1-64 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return value


_ANNOTATOR = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_annotator(value: str) -> str:
    """Return `value` if it is a valid annotator name, else raise InvalidArgumentError."""
    if not _ANNOTATOR.match(value):
        raise InvalidArgumentError(
            f"annotator {value[:80]!r} is invalid: use 1-64 characters from A-Z, a-z, 0-9 "
            "and '._@-'"
        )
    return value


def check_request_id(value: str) -> str:
    """Return `value` if it is a valid client request id (e.g. a UUID), else raise."""
    if not _REQUEST_ID.match(value):
        raise InvalidArgumentError(
            f"request_id {value[:80]!r} is invalid: every write needs a request id of 1-128 "
            "characters from A-Z, a-z, 0-9 and '._:-' (e.g. a UUID), the same one on retries"
        )
    return value
