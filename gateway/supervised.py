"""A session at a site that requires supervision (issue 13): it runs only while a supervisor of the site watches.

Released when the first supervisor watches (until then nothing reaches the target); when the last one leaves, the
session is held — a shell's or exec's input (the client channel stops being read, so SSH flow control keeps what they
type on their side), a TCP tunnel's bytes both ways (gateway/tunnels.py) — and it is cut after the site's grace
unless a supervisor watches again. Whether one watches comes from the broker's live link (gateway/observers.py:
``LiveSession.on_supervision``); a lost link counts as nobody watching (fail closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.models import Authorization


@dataclass(frozen=True)
class HoldWords:
    """What the hold says at each step; ``{asset}``, ``{site}`` and ``{grace}`` (seconds) are filled in."""

    waiting: str
    released: str
    held: str
    again: str
    cut: str


_CUT = ("gatepass: the session on {asset} was ended: no supervisor of {site} watched it for {grace} s, and the site "
        "requires one")

# A shell or exec session: the lines go to the vendor's terminal.
SESSION_WORDS = HoldWords(
    waiting="gatepass: {asset} is supervised: this session starts when a supervisor of {site} watches it; waiting "
            "for one (nothing runs until then)",
    released="gatepass: a supervisor of {site} is watching: the session starts",
    held="gatepass: no supervisor of {site} is watching: your input is held, and the session ends in {grace} s "
         "unless one watches again",
    again="gatepass: a supervisor of {site} is watching again: your input goes through",
    cut=_CUT,
)

# A TCP tunnel has no terminal: the lines go to its observers (and the log); the cut's line is the disconnect reason
# the vendor's ssh prints.
TUNNEL_WORDS = HoldWords(
    waiting="gatepass: {asset} is supervised: nothing is relayed on this connection until a supervisor of {site} "
            "watches it",
    released="gatepass: a supervisor of {site} is watching: the connection is relayed",
    held="gatepass: no supervisor of {site} is watching: the connection is held (nothing relayed either way), and "
         "the session ends in {grace} s unless one watches again",
    again="gatepass: a supervisor of {site} is watching again: the connection is relayed",
    cut=_CUT,
)


class SupervisedHold:
    """The hold of one supervised session; the session asks ``held`` before it reads from its client again."""

    def __init__(self, auth: Authorization, *, warn: Callable[[str], None], pause: Callable[[], None],
                 resume: Callable[[], None], cut: Callable[[str], None], words: HoldWords = SESSION_WORDS) -> None:
        self._auth = auth
        self._warn = warn
        self._pause = pause
        self._resume = resume
        self._cut = cut
        self._words = words
        self._supervised = asyncio.Event()
        self._released = False
        self._closed = False
        self.held = False
        self._timer: asyncio.TimerHandle | None = None

    def _say(self, template: str) -> str:
        auth = self._auth
        return template.format(asset=auth.asset, site=auth.site, grace=f"{auth.supervision_grace:g}")

    @property
    def released_once(self) -> bool:
        """A supervisor has watched this session (it may be held again since)."""
        return self._released

    async def released(self) -> None:
        """Return once a supervisor of the site watches (at once if one does); the caller's cancellation (a closed
        channel, a cut) ends the wait."""
        if not self._supervised.is_set():
            self._warn(self._say(self._words.waiting))
            # A loop, not one wait: a supervisor who came and left before this task ran must not release it
            # (Event.wait returns after a set() even when clear() followed).
            while not self._supervised.is_set():
                await self._supervised.wait()
            self._warn(self._say(self._words.released))
        self._released = True

    def changed(self, supervised: bool) -> None:
        """Whether a supervisor of the site watches changed."""
        if supervised:
            self._supervised.set()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.held:
                self.held = False
                self._warn(self._say(self._words.again))
                self._resume()
            return
        self._supervised.clear()
        if not self._released or self._closed or self.held:
            return  # still waiting for the first one, or held already
        self.held = True
        self._pause()
        self._warn(self._say(self._words.held))
        self._timer = asyncio.get_running_loop().call_later(self._auth.supervision_grace, self._expired)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._cut(self._say(self._words.cut))
