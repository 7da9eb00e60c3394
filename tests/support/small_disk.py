"""A real file system that fills up: a tmpfs of a few hundred KiB mounted for one test, with a
filler file that takes the room left (``fill``) and gives it back (``free``). The disk-full errors
the stores see are then the kernel's own ENOSPC, not an imitation.

Needs root (mount), as the multi-host tests do; ``make test`` runs as root in CI.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FILLER = ".filler"


@dataclass
class SmallDisk:
    path: Path

    def fill(self) -> None:
        """Take every byte left (the stores' next growth fails with ENOSPC)."""
        with (self.path / FILLER).open("ab", buffering=0) as handle:
            chunk = b"\0" * 4096
            try:
                while handle.write(chunk):
                    pass
            except OSError:  # ENOSPC: the room is taken
                pass

    def free(self) -> None:
        """Give the filler's room back."""
        (self.path / FILLER).unlink(missing_ok=True)


@contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[SmallDisk]:
    """A tmpfs of ``size`` mounted at ``where`` (created) for the ``with`` block."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "vigil-test", str(where)], check=True)
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
