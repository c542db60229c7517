"""`proxal ls-backend`'s HTTP app: Label Studio's ML-backend routes (label_studio_ml/api.py)
over `LabelStudioBackend`, with HTTP Basic or Bearer auth and proxal's errors mapped to
HTTP statuses in one table (`HTTP_STATUS_BY_ERROR`).

Routes: GET / and /health, GET /metrics, POST /setup, /predict, /webhook and /train. Like
Label Studio's own backend (its `check_auth` runs before every request), when auth is
configured every route needs it, /health included: Label Studio sends the connection's
Basic credentials on health checks too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxal.orchestrator_service.labelstudio.backend import LabelStudioBackend
from proxal.runtime import errors
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)
HTTP_STATUS_BY_ERROR: dict[type[errors.ProxalError], int] = {
    errors.InvalidArgumentError: 400,
    errors.UnauthenticatedError: 401,
    errors.NotFoundError: 404,
    errors.AlreadyExistsError: 409,
    errors.FailedPreconditionError: 409,
    errors.ResourceExhaustedError: 429,
    errors.UnavailableError: 503,
    errors.DeadlineExceededError: 504,
    errors.MissingDependencyError: 500,
}


def http_status(exc: errors.ProxalError) -> int:
    """The HTTP status of a proxal error (its nearest mapped class; 500 if none)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS_BY_ERROR:
            return HTTP_STATUS_BY_ERROR[cls]
    return 500


@dataclass(frozen=True)
class Auth:
    """Credentials every request must carry: HTTP Basic `user`/`password`, or `Bearer
    <token>`; nothing set: no auth."""

    user: str = ""
    password: str = ""
    token: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.user or self.token)

    def check(self, header: str) -> None:
        """UnauthenticatedError unless the Authorization header matches."""
        scheme, _, value = header.partition(" ")
        if self.token and scheme.lower() == "bearer":
            if hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return
        elif self.user and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            same_user = hmac.compare_digest(user.encode(), self.user.encode())
            if same_user & hmac.compare_digest(password.encode(), self.password.encode()):
                return
        raise errors.UnauthenticatedError(
            "missing or wrong credentials: set the model connection's basic auth user and "
            "password (or send 'Authorization: Bearer <token>')"
        )

    def challenge(self) -> str:
        return 'Basic realm="proxal"' if self.user else 'Bearer realm="proxal"'


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": "error"}, status, headers=headers)


Handler = Callable[[Any], dict[str, Any]]


def _endpoint(auth: Auth, handler: Handler | None) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint: auth, then the JSON body to `handler` in a worker thread (GET: no body
    and `handler` None answers {}), errors as {"error": ...} with their status."""

    async def endpoint(request: Request) -> Response:
        try:
            if auth.enabled:
                auth.check(request.headers.get("authorization", ""))
            if handler is None:
                return JSONResponse({})
            try:
                body = json.loads(await request.body() or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise errors.InvalidArgumentError(f"the body is not JSON: {exc}") from None
            return JSONResponse(await run_in_threadpool(handler, body))
        except errors.ProxalError as exc:
            status = http_status(exc)
            if status == 500:
                log.error("%s %s failed: %s", request.method, request.url.path, exc)
            challenge = {"WWW-Authenticate": auth.challenge()} if status == 401 else None
            return _error(status, str(exc), challenge)
        except Exception as exc:  # a bug: logged with its traceback, the server keeps serving
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return endpoint


def create_app(backend: LabelStudioBackend, auth: Auth, orchestrator: str) -> Starlette:
    """The Starlette app serving `backend` (`orchestrator` names its address on /health)."""
    health = {"status": "UP", "model_class": "proxal", "orchestrator": orchestrator}

    def health_handler(_: object) -> dict[str, Any]:
        return health

    def post(path: str, handler: Handler) -> Route:
        return Route(path, _endpoint(auth, handler), methods=["POST"])

    def get(path: str, handler: Handler | None) -> Route:
        return Route(path, _endpoint(auth, handler), methods=["GET"])

    return Starlette(
        routes=[
            get("/", health_handler),
            get("/health", health_handler),
            get("/metrics", None),
            post("/setup", backend.setup),
            post("/predict", backend.predict),
            post("/webhook", backend.webhook),
            post("/train", backend.train),
        ]
    )
