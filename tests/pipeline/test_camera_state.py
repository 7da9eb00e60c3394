"""The camera state machine allows only the transitions a decoder can make, and publishes each."""

from __future__ import annotations

import pytest

from pipeline.camera_state import CameraState, CameraStateMachine, InvalidTransitionError


def machine() -> tuple[CameraStateMachine, list[tuple[CameraState, str | None]]]:
    published: list[tuple[CameraState, str | None]] = []
    return CameraStateMachine("door", lambda state, detail: published.append((state, detail))), published


def test_a_reconnect_cycle_is_published_in_order() -> None:
    states, published = machine()
    for state in (
        CameraState.CONNECTING,
        CameraState.STREAMING,
        CameraState.STALLED,
        CameraState.BACKING_OFF,
        CameraState.CONNECTING,
        CameraState.STREAMING,
        CameraState.STOPPED,
    ):
        states.to(state, f"why {state.value}")
    assert [s for s, _ in published][:3] == [CameraState.CONNECTING, CameraState.STREAMING, CameraState.STALLED]
    assert published[3] == (CameraState.BACKING_OFF, "why backing-off")
    assert states.finished


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], CameraState.STREAMING),  # streaming before connecting
        ([CameraState.CONNECTING], CameraState.STALLED),  # stalled before a single frame
        ([CameraState.CONNECTING, CameraState.FAILED], CameraState.CONNECTING),  # failed for good
        ([CameraState.STOPPED], CameraState.CONNECTING),
    ],
)
def test_impossible_transitions_are_refused(path: list[CameraState], bad: CameraState) -> None:
    states, _ = machine()
    for state in path:
        states.to(state)
    with pytest.raises(InvalidTransitionError, match="cannot go from"):
        states.to(bad)


def test_status_strings_round_trip_and_read_well() -> None:
    assert CameraState.BACKING_OFF.status == "camera-backing-off"
    assert CameraState.from_status("camera-backing-off") is CameraState.BACKING_OFF
    assert CameraState.from_status("camera-done") is None
    assert CameraState.from_status("running") is None
    assert CameraState.BACKING_OFF.label == "backing off"
