"""Domain errors named after gRPC status codes, and the one decorator that maps them to statuses.

The engine raises these (it never imports grpc); the servicer's methods are wrapped by `grpc_errors`,
the only place where an exception becomes a status code. grpc is imported lazily here so that importing
this module (as the engine does) does not pull grpc in.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)


class StudioError(Exception):
    """Base of every error the server answers with a status; `code` is a grpc.StatusCode name."""

    code = "UNKNOWN"


class InvalidArgumentError(StudioError, ValueError):
    """Malformed input: a storyboard, a parameter, a plate, a chunk order. The message names it."""

    code = "INVALID_ARGUMENT"


class NotFoundError(StudioError, LookupError):
    """No such id for this caller (another caller's job looks exactly like a missing one)."""

    code = "NOT_FOUND"


class AlreadyExistsError(StudioError):
    """An idempotency key reused for a different request."""

    code = "ALREADY_EXISTS"


class ResourceExhaustedError(StudioError):
    """A size or count limit: upload bytes, queued jobs per caller. The message names the limit."""

    code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(StudioError):
    """The call is valid but not in the job's current state (e.g. the result of a running job)."""

    code = "FAILED_PRECONDITION"


class UnauthenticatedError(StudioError):
    """No or unknown bearer token."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(StudioError):
    """The caller is known but may not do this (e.g. publish an adapter without an admin token)."""

    code = "PERMISSION_DENIED"


class DataLossError(StudioError):
    """Bytes arrived damaged (a checksum mismatch) or a stored frame is missing on disk."""

    code = "DATA_LOSS"


class UnavailableError(StudioError):
    """The server is shutting down; retry later (on this server or another)."""

    code = "UNAVAILABLE"


F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: Any, exc: BaseException, method: str) -> None:
    import grpc

    if isinstance(exc, StudioError):
        code = getattr(grpc.StatusCode, exc.code)
        log.info("%s -> %s: %s", method, exc.code, exc)
        context.abort(code, str(exc))
    incident = uuid.uuid4().hex[:12]
    log.exception("%s failed (incident %s)", method, incident)
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal server error in {method} (incident {incident}; the server log has the details)",
    )


def grpc_errors(method: F) -> F:
    """Wrap a servicer method (unary or server-streaming) so StudioErrors become their status codes.

    Any other exception becomes INTERNAL with an incident id that is also logged with its traceback.
    Servicer methods therefore raise StudioErrors and never call context.abort themselves (grpc's abort
    raises a bare Exception that this wrapper could not tell from a bug).
    """
    name = method.__name__

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: Any) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - the one mapping point
                _abort(context, exc, name)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the one mapping point
            _abort(context, exc, name)

    return unary_wrapper  # type: ignore[return-value]
