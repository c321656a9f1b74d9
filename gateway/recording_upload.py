"""A separate gateway's recordings go to the broker: each uploaded once its session's end is reported, then
deleted here (`gatepass gateway`; `--keep-recordings` turns it off).

Why: the broker's reviewers play recordings back, `gatepass audit verify` checks them, the retention purge and
evidence holds govern them, and all of that happens where the broker keeps its recordings. A gateway in a plant
would otherwise keep every recording on its own disk for ever, out of their reach.

How: one upload at a time (a plant's uplink is often thin, and sessions come first), oldest first. The broker
takes the file only if it is exactly what the session-end call reported (name, size, SHA-256; see
broker.recordings.intake) and answers once it is fsynced there; only then is the copy here deleted. While the
broker cannot be reached the gateway tries again, backing off to a minute; a refusal (the broker has no such
report, or the file changed here since) is logged and the file stays for an operator. At start the directory is
read again, so what a restart or an outage interrupted is sent too. If the broker's answer names this very file
(the same device and inode: the gateway's directory is the broker's own, shared), nothing is deleted and
nothing more is uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from gateway.broker_client import BrokerClient
from gateway.errors import BrokerCallFailed, BrokerProtocolError, BrokerRefused
from gateway.recording_store import RECORDING_NAME, sync_directory

logger = logging.getLogger("gatepass.gateway.upload")

# Seconds between tries while the broker cannot take an upload: doubled from the first to the last.
FIRST_RETRY = 1.0
LAST_RETRY = 60.0


class RecordingUploader:
    """Uploads finished recordings from ``directory`` to the broker and deletes them here once it holds them."""

    def __init__(self, broker: BrokerClient, directory: Path, *, first_retry: float = FIRST_RETRY,
                 last_retry: float = LAST_RETRY) -> None:
        self._broker = broker
        self._directory = directory
        self._first_retry, self._last_retry = first_retry, last_retry
        self._waiting: dict[str, None] = {}  # names in order (a dict: ordered, and no name twice)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Names the broker refused, with its reason: left here for an operator, not tried again by this process.
        self.refused: dict[str, str] = {}
        self.uploaded = 0
        # True once the broker's answer showed that its recordings directory is this one (nothing to upload).
        self.shared_with_broker = False
        self.idle = asyncio.Event()
        self.idle.set()

    def start(self, exclude: set[str] | frozenset[str] = frozenset()) -> None:
        """Queue what is in the directory already (oldest first), but ``exclude`` (recordings whose session's end
        has not reached the broker yet: queued once it has), and start uploading."""
        found = []
        for path in self._directory.glob("*.cast"):
            with contextlib.suppress(OSError):  # gone meanwhile
                if RECORDING_NAME.fullmatch(path.name) and path.name not in exclude and path.is_file():
                    found.append((path.stat().st_mtime, path.name))
        for _, name in sorted(found):
            self.queue(name)
        self._task = asyncio.ensure_future(self._run())

    def queue(self, name: str) -> None:
        """Upload ``name`` (a finished recording whose session's end the broker has been told) when its turn comes."""
        if not RECORDING_NAME.fullmatch(name):  # a plain name in this directory, never a path
            logger.warning("%r is not a recording name: not uploaded", name[:80])
            return
        if self.shared_with_broker or name in self.refused:
            return
        self._waiting[name] = None
        self.idle.clear()
        self._wake.set()

    async def stop(self) -> None:
        """Stop uploading; an upload under way is abandoned (the broker keeps nothing of it) and sent after a
        restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._first_retry
        while True:
            if not self._waiting:
                self.idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            name = next(iter(self._waiting))
            try:
                await self._upload(name)
            except BrokerRefused as refusal:
                logger.warning("the broker refused recording %s (%s); it stays in %s", name, refusal.message,
                               self._directory)
                self.refused[name] = refusal.message
            except (BrokerCallFailed, OSError) as exc:
                logger.warning("could not upload recording %s (%s); trying again in %.0f s", name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._last_retry)
                continue
            delay = self._first_retry
            self._waiting.pop(name, None)

    async def _upload(self, name: str) -> None:
        path = self._directory / name
        try:
            local = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            logger.warning("recording %s is no longer in %s: nothing to upload", name, self._directory)
            return
        answer = await self._broker.upload_recording(name, path)
        stored = _stored_file(answer)
        if stored == (local.st_dev, local.st_ino):
            self._shared(name)
            return
        self.uploaded += 1
        try:
            await asyncio.to_thread(_delete, path)
        except OSError as exc:  # a disk gone read-only: the broker has it; not sent again by this process
            logger.warning("recording %s is with the broker but could not be deleted here (%s)", name, exc)
            return
        logger.info("recording %s is with the broker (%d bytes, SHA-256 %s); deleted here", name,
                    answer.get("bytes"), answer.get("sha256"))

    def _shared(self, name: str) -> None:
        logger.warning("the broker stores recordings in this gateway's own directory %s (it answered for %s with "
                       "this very file): nothing is uploaded or deleted; run this gateway with --keep-recordings",
                       self._directory, name)
        self.shared_with_broker = True
        self._waiting.clear()


def _stored_file(answer: Any) -> tuple[int, int]:
    """(device, inode) of the broker's stored file, from its answer; refuses an answer that does not say stored."""
    file = answer.get("file") if isinstance(answer, dict) else None
    if not isinstance(answer, dict) or answer.get("stored") is not True or not isinstance(file, dict) \
            or not isinstance(file.get("device"), int) or not isinstance(file.get("inode"), int):
        raise BrokerProtocolError("the broker's answer to a recording upload does not say it stored the file")
    return file["device"], file["inode"]


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    sync_directory(path.parent)  # the deletion is durable, like the broker's copy
