"""Another process holding an alert store, as a second vigil's sink would: ``AlertStore(path,
exclusive=True)`` in a child Python that waits until it is killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys
from stages.alerting.store import AlertStore
store = AlertStore(sys.argv[1], exclusive=True)
print("held", flush=True)
sys.stdin.read()
"""


def hold_in_another_process(path: Path) -> subprocess.Popen[str]:
    """The holding process, once it holds ``path``; ``kill()`` and ``wait()`` it when done."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder
