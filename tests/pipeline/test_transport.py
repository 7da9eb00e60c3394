from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from pipeline.messages import EndOfStream, Frame
from pipeline.stage import SEND_LINGER_MS
from pipeline.transport import Backpressure, Outbox, Receiver, Sender, StopRequestedError


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


def test_an_outbox_waits_until_a_busy_receiver_has_taken_every_message(context, tmp_path):
    """The receiver reads nothing for longer than a process's exit lingers (SEND_LINGER_MS) while
    analysis-sized frames wait in the sender's queue: the outbox still sees every message, the end
    of stream included, taken before it returns."""
    endpoint = f"ipc://{tmp_path}/outbox.sock"
    receiver = Receiver(context, endpoint, queue=2)
    outbox = Outbox()
    sender = outbox.add(Sender(outbox.context, endpoint, queue=2))
    image = np.zeros((480, 640, 3), np.uint8)  # 900 KiB: more than the kernel's socket buffer
    for seq in range(3):
        sender.send(Frame(camera="c", seq=seq, pts=seq / 5, wall_time=0.0, image=image))
    sender.send_control(EndOfStream("c", "video"))
    received: list[object] = []

    def busy_then_drain() -> None:
        time.sleep(SEND_LINGER_MS / 1000 + 1)
        while (message := receiver.recv(timeout_ms=2000)) is not None:
            received.append(message)

    reader = threading.Thread(target=busy_then_drain)
    reader.start()
    began = time.monotonic()
    assert outbox.deliver_all(lambda: False)
    assert time.monotonic() - began > SEND_LINGER_MS / 1000, "it waited for the reader"
    reader.join(30)
    assert [m.seq for m in received if isinstance(m, Frame)] == [0, 1, 2]
    assert isinstance(received[-1], EndOfStream)
    receiver.close()


def test_an_outbox_gives_up_when_asked_to_stop(tmp_path):
    outbox = Outbox()
    sender = outbox.add(Sender(outbox.context, f"ipc://{tmp_path}/nobody.sock", queue=2))
    sender.send_control(EndOfStream("cam", "video"))  # queued for a receiver that never comes
    asked = time.monotonic() + 0.5
    began = time.monotonic()
    assert not outbox.deliver_all(lambda: time.monotonic() > asked, poll_s=0.05)
    assert time.monotonic() - began < 5
