"""The camera state machine: what a camera's decoder is doing, with the transitions it may make.

A decoder publishes every change as a status event ``camera-<state>`` on the bus; the supervisor
keeps the latest per camera for the live display and the summary.

    connecting ──> streaming ──> stalled ──> backing-off ──> connecting ...
         │             │                          ^
         ├─────────────┴──────────────────────────┘  (refused, timed out, stream ended, read error)
         └──> failed   (401 unauthorized, 404 not found, unreadable file: retrying cannot help)
    any ──> stopped    (end of file, or the run stops)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

logger = logging.getLogger(__name__)

STATUS_PREFIX = "camera-"


class CameraState(StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKING_OFF = "backing-off"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def label(self) -> str:
        """How the state reads in the display: ``backing off``."""
        return self.value.replace("-", " ")

    @property
    def status(self) -> str:
        """The status-event state string: ``camera-backing-off``."""
        return STATUS_PREFIX + self.value

    @classmethod
    def from_status(cls, state: str) -> CameraState | None:
        """The camera state a status event carries, or None for other events."""
        if not state.startswith(STATUS_PREFIX):
            return None
        try:
            return cls(state.removeprefix(STATUS_PREFIX))
        except ValueError:
            return None


ALLOWED: dict[CameraState | None, frozenset[CameraState]] = {
    None: frozenset({CameraState.CONNECTING, CameraState.STOPPED}),
    CameraState.CONNECTING: frozenset(
        {CameraState.STREAMING, CameraState.BACKING_OFF, CameraState.FAILED, CameraState.STOPPED}
    ),
    CameraState.STREAMING: frozenset(
        {CameraState.STALLED, CameraState.BACKING_OFF, CameraState.CONNECTING, CameraState.FAILED, CameraState.STOPPED}
    ),
    CameraState.STALLED: frozenset({CameraState.BACKING_OFF, CameraState.CONNECTING, CameraState.STOPPED}),
    CameraState.BACKING_OFF: frozenset({CameraState.CONNECTING, CameraState.STOPPED}),
    CameraState.FAILED: frozenset({CameraState.STOPPED}),
    CameraState.STOPPED: frozenset(),
}


class InvalidTransitionError(ValueError):
    """A state change the machine does not allow (a bug in the decoder, not a camera problem)."""


Publish = Callable[[CameraState, str | None], None]


class CameraStateMachine:
    """Holds one camera's state, checks each change against ``ALLOWED`` and publishes it."""

    def __init__(self, camera_id: str, publish: Publish) -> None:
        self.camera_id = camera_id
        self.state: CameraState | None = None
        self.detail: str | None = None
        self._publish = publish

    def to(self, state: CameraState, detail: str | None = None) -> None:
        if state not in ALLOWED[self.state]:
            raise InvalidTransitionError(f"camera {self.camera_id}: cannot go from {self.state} to {state}")
        changed = state != self.state
        self.state, self.detail = state, detail
        if changed:
            level = logging.WARNING if state in (CameraState.STALLED, CameraState.BACKING_OFF) else logging.INFO
            if state is CameraState.FAILED:
                level = logging.ERROR
            logger.log(level, "camera %s: %s%s", self.camera_id, state.label, f" ({detail})" if detail else "")
        self._publish(state, detail)

    @property
    def finished(self) -> bool:
        return self.state in (CameraState.FAILED, CameraState.STOPPED)
