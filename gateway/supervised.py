"""A session at a site that requires supervision (issue 13): it runs only while a supervisor of the site watches.

Released when the first supervisor watches (until then nothing reaches the target); when the last one leaves, the
vendor's input is held (the client channel stops being read, so SSH flow control keeps what they type on their
side) and the session is cut after the site's grace unless a supervisor watches again. Whether one watches comes
from the broker's live link (gateway/observers.py: ``LiveSession.on_supervision``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.models import Authorization


class SupervisedHold:
    """The hold of one supervised session; the session asks ``held`` before it reads from its client again."""

    def __init__(self, auth: Authorization, *, warn: Callable[[str], None], pause: Callable[[], None],
                 resume: Callable[[], None], cut: Callable[[str], None]) -> None:
        self._auth = auth
        self._warn = warn
        self._pause = pause
        self._resume = resume
        self._cut = cut
        self._supervised = asyncio.Event()
        self._released = False
        self._closed = False
        self.held = False
        self._timer: asyncio.TimerHandle | None = None

    async def released(self) -> None:
        """Return once a supervisor of the site watches (at once if one does); the caller's cancellation (a closed
        channel, a cut) ends the wait."""
        auth = self._auth
        if not self._supervised.is_set():
            self._warn(f"gatepass: {auth.asset} is supervised: this session starts when a supervisor of {auth.site} "
                       "watches it; waiting for one (nothing runs until then)")
            await self._supervised.wait()
            self._warn(f"gatepass: a supervisor of {auth.site} is watching: the session starts")
        self._released = True

    def changed(self, supervised: bool) -> None:
        """Whether a supervisor of the site watches changed."""
        auth = self._auth
        if supervised:
            self._supervised.set()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.held:
                self.held = False
                self._warn(f"gatepass: a supervisor of {auth.site} is watching again: your input goes through")
                self._resume()
            return
        self._supervised.clear()
        if not self._released or self._closed or self.held:
            return  # still waiting for the first one, or held already
        self.held = True
        self._pause()
        self._warn(f"gatepass: no supervisor of {auth.site} is watching: your input is held, and the session ends in "
                   f"{auth.supervision_grace:g} s unless one watches again")
        self._timer = asyncio.get_running_loop().call_later(auth.supervision_grace, self._expired)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        auth = self._auth
        self._cut(f"gatepass: the session on {auth.asset} was ended: no supervisor of {auth.site} watched it for "
                  f"{auth.supervision_grace:g} s, and the site requires one")
