from __future__ import annotations

import threading

import numpy as np
import pytest
import zmq

from pipeline.messages import Frame
from pipeline.transport import Backpressure, Receiver, Sender, StopRequestedError


def frame(seq: int) -> Frame:
    return Frame(camera="c", seq=seq, pts=seq / 10, wall_time=0.0, image=np.zeros((8, 8, 3), np.uint8))


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_block_policy_delivers_everything_in_order(context, tmp_path):
    endpoint = f"ipc://{tmp_path / 'q.sock'}"
    receiver = Receiver(context, endpoint, queue=2)
    sender = Sender(context, endpoint, queue=2, policy=Backpressure.BLOCK)
    sent = threading.Thread(target=lambda: [sender.send(frame(i)) for i in range(50)])
    sent.start()
    got = []
    while len(got) < 50:
        message = receiver.recv(timeout_ms=2000)
        assert message is not None, "receiver starved"
        got.append(message.seq)
    sent.join(5)
    assert got == list(range(50))
    assert sender.drops == 0


def test_drop_oldest_policy_counts_drops_and_keeps_the_newest(context, tmp_path):
    endpoint = f"ipc://{tmp_path / 'q.sock'}"
    receiver = Receiver(context, endpoint, queue=1)
    sender = Sender(context, endpoint, queue=1, policy=Backpressure.DROP_OLDEST)
    for i in range(200):  # nobody reads: the queue fills, then only the newest waits
        sender.send(frame(i))
    assert sender.drops > 0
    got = []
    while (message := receiver.recv(timeout_ms=300)) is not None:
        got.append(message.seq)
    sender.send_control(frame(999))  # flushes the waiting one, then sends
    while (message := receiver.recv(timeout_ms=300)) is not None:
        got.append(message.seq)
    assert got == sorted(got), "order is kept"
    assert got[-2:] == [199, 999], "the newest frame was kept, older ones gave way"
    assert sender.sent + sender.drops == 200, "every data message is either sent or counted as dropped"


def test_blocked_send_gives_up_when_the_stage_is_stopping(context, tmp_path):
    stop = threading.Event()
    sender = Sender(context, f"ipc://{tmp_path / 'nobody.sock'}", queue=1, should_stop=stop.is_set)
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(StopRequestedError):
        for i in range(10):
            sender.send(frame(i))
