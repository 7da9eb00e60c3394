"""Log lines never carry a camera's password, not even inside a traceback; a repeating problem is
logged once per period."""

from __future__ import annotations

import logging
import time

from pipeline.logs import RateLimited, RedactingFormatter


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("vigil.test", logging.ERROR, __file__, 1, message, args, info)


def test_passwords_in_arguments_and_tracebacks_are_redacted() -> None:
    formatter = RedactingFormatter("%(message)s")
    text = formatter.format(record("camera %s: %s", "door", "cannot open rtsp://guard:hunter2@10.0.0.9/s"))
    assert text == "camera door: cannot open rtsp://guard:***@10.0.0.9/s"
    try:
        raise ConnectionError("rtsp://guard:hunter2@10.0.0.9/s refused")
    except ConnectionError as exc:
        text = formatter.format(record("crashed", exc=exc))
    assert "hunter2" not in text and "guard:***@" in text and "Traceback" in text


def test_a_repeating_problem_is_due_at_once_then_once_per_period_until_reset() -> None:
    limited = RateLimited(0.2)
    assert [limited.due(), limited.due(), limited.due()] == [True, False, False]
    time.sleep(0.25)
    assert limited.due() and not limited.due()
    limited.reset()
    assert limited.due(), "a new episode is reported at once"
