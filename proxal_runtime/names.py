"""Validation of the names clients choose (pools, sessions, splits).

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
