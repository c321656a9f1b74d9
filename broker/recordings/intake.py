"""Recordings arriving from separate gateways: ``PUT /api/v1/gateway/recordings/{name}``.

A gateway run on its own (`gatepass gateway`, one per plant) writes recordings on its own disk, where the broker's
reviewers, `gatepass audit verify` and the retention purge cannot reach them. Once a session's end is reported
(with the file's SHA-256 and size, into the hash-chained trail), that gateway uploads the file here. It is taken
only if it is exactly what the gateway reported: the name is the one on the session's row, the session is the
calling gateway's, and the bytes that arrive have the reported size and SHA-256. Anything else is refused and
audited (``gateway:recording:refused``): a gateway whose copy changed after the session is a finding, not a retry.

The file is written beside its final name (``.NAME.upload-RANDOM``, 0600), fsynced and then linked to its name,
which never replaces a file: a recording stored here is evidence and is not overwritten, even by identical bytes.
A second upload of a stored recording (the answer to the first was lost) is answered as stored, so the gateway
may delete its copy; a *different* file under that name is refused. The session's ``recording_on_gateway`` is
cleared, with a ``gateway:recording:received`` event, in the transaction after the file is in place: if that
commit fails, the retry finds the file and commits then.

The answer carries the stored file's device and inode: a gateway whose recordings directory *is* this one (the
same disk, shared by mistake) sees its own file there and keeps it, instead of deleting the only copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from broker.audit import trail
from broker.audit.trail import Action
from broker.db import read_only_unit, unit_of_work
from broker.errors import BrokerError, Conflict, InvalidInput, NotFound, NotNow
from broker.models import AccessSession
from broker.recordings.store import RECORDING_NAME, file_digest, resolve

# Bytes gathered from the request before one write (and hash) off the event loop.
WRITE_BLOCK = 1024 * 1024
# Free bytes an upload must leave on the recordings disk (the embedded gateway's recordings need room too).
FREE_SPACE_KEPT = 1024 * 1024 * 1024
# Seconds without a write after which a partial upload is abandoned (remove_abandoned; the purge job calls it).
ABANDONED_AFTER = 3600.0

log = logging.getLogger("gatepass.broker.recordings")
# The upload each gateway has under way (by gateway id), in this broker process.
_uploading: dict[int, asyncio.Lock] = {}


@dataclass(frozen=True)
class Uploader:
    """The calling gateway, as the upload's audit events name it."""

    gateway_id: int
    name: str

    @property
    def actor(self) -> str:
        return f"gateway:{self.name}"


@dataclass(frozen=True)
class Expected:
    """What the gateway reported at the session's end: the only file this upload may be."""

    session_id: str
    site: str
    name: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.size}


@dataclass(frozen=True)
class Stored:
    """The answer: the recording is here whole (``already``: it was before this upload)."""

    name: str
    sha256: str
    size: int
    already: bool
    device: int
    inode: int

    def as_dict(self) -> dict[str, Any]:
        return {"stored": True, "name": self.name, "sha256": self.sha256, "bytes": self.size,
                "already_stored": self.already, "file": {"device": self.device, "inode": self.inode}}


async def receive(sessions: sessionmaker[Session], *, directory: Path, clock: Callable[[], dt.datetime],
                  uploader: Uploader, name: str, body: AsyncIterator[bytes]) -> Stored:
    """Take one upload: checked against the session's reported recording, stored under its name, or refused
    (a ``BrokerError``, audited) with nothing stored. One upload per gateway at a time (in this broker process),
    and none that would leave the disk with less than ``FREE_SPACE_KEPT``: those are answered 503, "try later"
    (a stolen gateway credential must not fill the broker's disk, where every embedded-gateway site records)."""
    lock = _uploading.setdefault(uploader.gateway_id, asyncio.Lock())
    if lock.locked():
        raise NotNow(f"gateway {uploader.name} is uploading another recording; send {name[:60]} after it")
    async with lock:
        return await _receive(sessions, directory=directory, clock=clock, uploader=uploader, name=name, body=body)


async def _receive(sessions: sessionmaker[Session], *, directory: Path, clock: Callable[[], dt.datetime],
                   uploader: Uploader, name: str, body: AsyncIterator[bytes]) -> Stored:
    expected: Expected | None = None
    try:
        expected = await run_in_threadpool(_expected, sessions, uploader, name)
        path = resolve(directory, name)
        await asyncio.to_thread(directory.mkdir, mode=0o700, parents=True, exist_ok=True)
        if await asyncio.to_thread(os.path.lexists, path):
            already = await _already_stored(path, expected)
            return await run_in_threadpool(_accept, sessions, clock, uploader, expected, path, already)
        await _check_room(directory, expected)
        placed = await _write(directory, path, expected, body)
        return await run_in_threadpool(_accept, sessions, clock, uploader, expected, path, not placed)
    except ClientDisconnect:
        # The gateway went away mid-upload (a restart, a dropped link): nothing was stored; it sends it again.
        raise InvalidInput(f"the upload of {name[:60]} was cut off before its end; nothing was stored") from None
    except NotNow:
        raise  # not a refusal of what the gateway sent: it tries again later
    except BrokerError as refusal:
        await run_in_threadpool(_audit_refusal, sessions, clock, uploader, name, expected, refusal)
        raise


async def _check_room(directory: Path, expected: Expected) -> None:
    free = (await asyncio.to_thread(shutil.disk_usage, directory)).free
    if free - expected.size < FREE_SPACE_KEPT:
        log.warning("recording %s (%d bytes) not taken now: %d bytes free in %s", expected.name, expected.size, free,
                    directory)
        raise NotNow(f"the broker's recordings disk has {free} bytes free; {expected.name} ({expected.size} bytes) "
                     "is taken once there is room")


def _expected(sessions: sessionmaker[Session], uploader: Uploader, name: str) -> Expected:
    if not RECORDING_NAME.fullmatch(name):  # the name's form first: nothing is looked up for a malformed one
        raise InvalidInput(f"'{name[:60]}' is not a recording name (like ses-1a2b3c4d.cast)")
    session_id = name.split(".", 1)[0]
    with read_only_unit(sessions) as session:
        record = session.get(AccessSession, session_id)
        if record is None or record.gateway_id != uploader.gateway_id:
            raise NotFound(f"there is no session {session_id} on this gateway")
        if record.recording_name != name or record.recording_sha256 is None or record.recording_bytes is None:
            raise Conflict(f"session {session_id} reported no recording named {name} at its end: only a reported "
                           "recording is taken, checked against its hash")
        if record.recording_purged_at is not None:
            raise Conflict(f"the recording {name} was purged under retention here already")
        return Expected(session_id=record.id, site=record.grant.asset.site.name, name=name,
                        sha256=record.recording_sha256, size=record.recording_bytes)


async def _already_stored(path: Path, expected: Expected) -> bool:
    """True when the file here is the reported one (an upload sent again); refuses a different one."""
    try:
        if not await asyncio.to_thread(path.is_file):
            raise OSError(f"{path.name} is not a plain file")
        digest, size = await asyncio.to_thread(file_digest, path)
    except OSError as exc:
        raise Conflict(f"something that is not the recording is stored here under {expected.name} ({exc}); it is "
                       "not replaced") from None
    if (digest, size) != (expected.sha256, expected.size):
        raise Conflict(f"a different file named {expected.name} is already stored here ({size} bytes, SHA-256 "
                       f"{digest}); it is not replaced")
    return True


async def _write(directory: Path, path: Path, expected: Expected, body: AsyncIterator[bytes]) -> bool:
    """The body into a new file beside ``path``, checked, then linked to ``path``: True if this upload placed it,
    False if an identical file got there first (two uploads at once)."""
    partial = directory / f".{expected.name}.upload-{secrets.token_hex(6)}"
    descriptor = await asyncio.to_thread(os.open, partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        digest, size = await _copy(descriptor, body, expected)
        if size != expected.size:
            raise InvalidInput(f"the upload of {expected.name} ended after {size} bytes; the gateway reported "
                               f"{expected.size} at the session's end")
        if digest != expected.sha256:
            raise InvalidInput(f"the uploaded {expected.name} has SHA-256 {digest}; the gateway reported "
                               f"{expected.sha256} at the session's end (the file changed on the gateway)")
        await asyncio.to_thread(os.fsync, descriptor)
        try:
            await asyncio.to_thread(os.link, partial, path)  # never replaces: a stored recording is evidence
        except FileExistsError:
            return not await _already_stored(path, expected)
        await asyncio.to_thread(_fsync_directory, directory)
        return True
    finally:
        os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


async def _copy(descriptor: int, body: AsyncIterator[bytes], expected: Expected) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()

    def write(block: bytes) -> None:
        digest.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(descriptor, view):]

    async for chunk in body:
        size += len(chunk)
        if size > expected.size:
            raise InvalidInput(f"the upload of {expected.name} is longer than the {expected.size} bytes the gateway "
                               "reported at the session's end")
        pending += chunk
        if len(pending) >= WRITE_BLOCK:
            block, pending = bytes(pending), bytearray()
            await asyncio.to_thread(write, block)
    if pending:
        await asyncio.to_thread(write, bytes(pending))
    return digest.hexdigest(), size


def _accept(sessions: sessionmaker[Session], clock: Callable[[], dt.datetime], uploader: Uploader,
            expected: Expected, path: Path, already: bool) -> Stored:
    """The session's recording is here: clear ``recording_on_gateway``; a file placed now is audited."""
    with unit_of_work(sessions) as session:
        record = session.get(AccessSession, expected.session_id)
        if record is not None and (record.recording_on_gateway or not already):
            record.recording_on_gateway = False
            trail.record(session, now=clock(), action=Action.RECORDING_RECEIVED, actor=uploader.actor,
                         subject=expected.session_id, site=expected.site,
                         details={"recording": expected.as_dict(), "gateway": uploader.name})
    stat = path.stat()
    return Stored(name=expected.name, sha256=expected.sha256, size=expected.size, already=already,
                  device=stat.st_dev, inode=stat.st_ino)


def _audit_refusal(sessions: sessionmaker[Session], clock: Callable[[], dt.datetime], uploader: Uploader,
                   name: str, expected: Expected | None, refusal: BrokerError) -> None:
    details: dict[str, Any] = {"name": name[:64], "gateway": uploader.name, "status": refusal.status_code,
                               "reason": refusal.message}
    if expected is not None:
        details["reported"] = expected.as_dict()
    with unit_of_work(sessions) as session:
        trail.record(session, now=clock(), action=Action.RECORDING_UPLOAD_REFUSED, outcome="refused",
                     actor=uploader.actor, subject=expected.session_id if expected else None,
                     site=expected.site if expected else None, details=details)


def remove_abandoned(directory: Path, *, now: float, older_than: float = ABANDONED_AFTER) -> int:
    """Delete partial uploads nobody has written to for ``older_than`` seconds (a broker that died mid-upload
    leaves one; the gateway sends the recording again). Returns how many went."""
    removed = 0
    for partial in directory.glob(".*.upload-*") if directory.is_dir() else ():
        with contextlib.suppress(OSError):  # gone meanwhile, or another replica's
            if partial.is_file() and not partial.is_symlink() and now - partial.stat().st_mtime > older_than:
                partial.unlink()
                removed += 1
    return removed


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
