"""Per-request limits every service applies before it looks at a request's content.

A string field longer than `MAX_STRING_CHARS` is refused outright: no name, path or
option a client may send is that long, and error messages that quote a bad value stay
well under gRPC's 8 KiB soft limit on status details (a longer quote would reach the
client as a RESOURCE_EXHAUSTED about metadata instead of the message).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from proxal.runtime.errors import InvalidArgumentError

MAX_STRING_CHARS = 512


def check_strings(message: Message, limit: int = MAX_STRING_CHARS, prefix: str = "") -> None:
    """Raise InvalidArgumentError naming the first string field (at any depth) over `limit`
    characters."""
    for field, value in message.ListFields():
        path = prefix + field.name
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            for text in values:
                if len(text) > limit:
                    raise InvalidArgumentError(
                        f"{path} is {len(text)} characters long; at most {limit} are accepted"
                    )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in values:
                check_strings(item, limit, path + ".")
