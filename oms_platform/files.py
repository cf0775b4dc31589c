"""Files written once by whichever process gets there first: keys and secrets that several
processes (a stack's children, parallel test workers) may all try to create at start-up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data` unless it exists; True if this call created it.

    Never overwrites (a key replaced is data lost), and a reader never sees part of the file:
    the data is written to a file of this caller's own, then linked in under `path`, which
    fails for every racer but the first."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True
