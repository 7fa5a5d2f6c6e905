"""One exception family for the host plugin: a base class and one subclass per failure.

Every subclass of a value-checking failure also derives from ValueError, so callers that only know the
standard library can still catch bad input. Messages say what was received, what was expected and, where
it helps, what to do.
"""

from __future__ import annotations


class HostPluginError(Exception):
    """Base of every error raised by host_plugin."""


class FrameMathError(HostPluginError, ValueError):
    """A rate, a time or a timecode that cannot be turned into exact integer frames."""


class RequestError(HostPluginError, ValueError):
    """A shot request in the edit (gap, marker or clip) is malformed or unsupported."""


class PlacementError(HostPluginError, ValueError):
    """A generated sequence cannot be placed on the timeline as asked."""


class PlateError(HostPluginError, ValueError):
    """An EXR plate cannot be used: missing, not an EXR, corrupt, non-finite, wrong channels, too big."""


class ExrWriteError(HostPluginError, ValueError):
    """Pixels or attributes given to the EXR writer are not writable as asked."""


class FillError(HostPluginError):
    """`fill_timeline` failed: a malformed OTIO file, a failed request or a missing result frame."""


class HostError(HostPluginError):
    """A host adapter (Resolve, Nuke, Blender) could not do what the core asked."""


class JobCancelled(HostPluginError):
    """Raised inside a worker when the user cancelled the job; becomes a "cancelled" event."""


class ClientError(HostPluginError):
    """A call to the ttt-studio server failed. `code` is the gRPC status name ("UNAVAILABLE", ...) or ""
    for failures found on this side (a damaged frame, an unsafe file name)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(ClientError):
    """The server refused the token (UNAUTHENTICATED): the token is missing, mistyped or revoked."""


class ServerUnavailableError(ClientError):
    """The server cannot be reached (UNAVAILABLE / DEADLINE_EXCEEDED) after the retries."""


class ServerMismatchError(ClientError, ValueError):
    """Found at connect time: the server speaks another API version, lacks a capability or runs another
    model than the plugin needs. The message lists what the server has."""


class JobFailedError(ClientError):
    """The server's job ended FAILED; the message carries the server's reason."""
