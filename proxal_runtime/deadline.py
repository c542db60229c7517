"""Deadlines for domain code: a gRPC call's remaining time, checked between phases."""

from __future__ import annotations

import time

import grpc
from proxal.runtime.errors import DeadlineExceededError


class Deadline:
    """A point in time (monotonic) after which work should stop; None means no deadline."""

    def __init__(self, seconds: float | None = None):
        self.end = None if seconds is None else time.monotonic() + seconds

    @classmethod
    def of(cls, context: grpc.ServicerContext) -> Deadline:
        """The deadline the client set on this call (none if it set none)."""
        return cls(context.time_remaining())

    def remaining(self) -> float | None:
        """Seconds left (negative once passed), or None without a deadline."""
        return None if self.end is None else self.end - time.monotonic()

    def check(self, done: str) -> None:
        """Raise DeadlineExceededError if the deadline has passed; `done` says how far we got."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceededError(
                f"the deadline passed {-left:.3f} s ago, after {done}; "
                "retry with a longer deadline or a smaller request"
            )
