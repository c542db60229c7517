"""One error hierarchy for all of proxal's domain code.

Domain code raises these; `proxal.runtime.server` maps them to gRPC status codes in one
table (`STATUS_BY_ERROR`). Messages say what to fix, because they reach the client as is.
"""

from __future__ import annotations


class ProxalError(Exception):
    """Base class of every error a client can cause or should see."""


class InvalidArgumentError(ProxalError):
    """The request itself is wrong (bad value, malformed file, k out of range)."""


class NotFoundError(ProxalError):
    """An unknown pool, embedding version, session or id."""


class AlreadyExistsError(ProxalError):
    """A name that must be new is taken (a pool split, a session)."""


class FailedPreconditionError(ProxalError):
    """The system is not in a state to do this (incomplete version, no embeddings yet)."""


class ResourceExhaustedError(ProxalError):
    """Over a configured limit (request size, batch size, concurrent work)."""


class DeadlineExceededError(ProxalError):
    """The caller's deadline passed before the work was done; nothing was changed."""


class UnauthenticatedError(ProxalError):
    """Missing or wrong credentials."""


class UnavailableError(ProxalError):
    """A service this one depends on cannot be reached."""


class MissingDependencyError(ProxalError):
    """An optional dependency is not installed; the message names the extra to install."""


class AddressUnavailableError(ProxalError):
    """A server cannot listen on its address (another process holds the port, or the host
    is not this machine's). Raised at start-up only, never inside a call."""
