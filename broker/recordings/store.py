"""The recordings directory: safe recording names, a file's SHA-256, and a session looked up for its recording."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sqlalchemy.orm import Session

from broker.errors import InvalidInput, NotFound
from broker.models import AccessSession
from broker.settings import Settings

# <session id>.cast, or .<n>.cast for later channels of the same session (the gateway API's rule); no paths.
RECORDING_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}(\.[0-9]{1,6})?\.cast")


def recordings_dir(settings: Settings) -> Path:
    """Where the gateway of `gatepass serve` keeps recordings (DATA_DIR/recordings)."""
    return settings.recordings_dir


def resolve(directory: Path, name: str) -> Path:
    """The path of recording ``name`` inside ``directory``; refuses anything that is not a plain recording
    name (no separators, no ``..``), so a name from a URL or a database row cannot reach another file."""
    if not RECORDING_NAME.fullmatch(name):
        raise InvalidInput(f"'{name[:60]}' is not a recording name (like ses-1a2b3c4d.cast)")
    path = directory / name
    if path.is_symlink() or path.resolve().parent != directory.resolve():
        raise InvalidInput(f"recording {name} is not a plain file in the recordings directory")
    return path


def file_digest(path: Path, chunk: int = 1024 * 1024) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks (recordings can be large)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def load(session: Session, session_id: str) -> AccessSession:
    record = session.get(AccessSession, session_id)
    if record is None:
        raise NotFound(f"there is no session {session_id[:40]}")
    return record
