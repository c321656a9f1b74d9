"""What a client command needs from the outside world, in one object so tests can supply their own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

from cli.state import ClientState, Session

if TYPE_CHECKING:
    # httpx (with cli.api) is imported when a command first asks for an API client: it is the largest part of the
    # CLI's start-up, and commands that never talk to the broker (admin, serve) do not pay for it.
    import httpx

    from cli.api import ApiClient


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class Context:
    environ: Mapping[str, str]
    state: ClientState
    out: TextIO
    err: TextIO
    clock: Callable[[], dt.datetime] = _utc_now
    sleep: Callable[[float], None] = time.sleep
    transport: httpx.BaseTransport | None = None  # tests pass a real in-process transport
    # The real command becomes ssh (exec), so signals, job control and exit status are ssh's own and no
    # orphaned ssh outlives a killed `gatepass ssh`; in-process tests keep ssh as a child instead.
    replace_process_with_ssh: bool = False

    @classmethod
    def from_process(cls) -> Context:
        return cls(
            environ=os.environ, state=ClientState.from_environ(os.environ), out=sys.stdout, err=sys.stderr,
            replace_process_with_ssh=True,
        )

    def session(self) -> Session:
        return self.state.require_session(environ=self.environ, now=self.clock())

    def api(self, session: Session | None = None) -> ApiClient:
        """A client authenticated with the saved session (``NotLoggedIn`` when there is none)."""
        from cli.api import ApiClient

        session = session or self.session()
        return ApiClient(
            session.server, token=session.token, username=session.username, transport=self.transport
        )

    def anonymous_api(self, server: str) -> ApiClient:
        from cli.api import ApiClient

        return ApiClient(server, transport=self.transport)

    def say(self, line: str) -> None:
        print(line, file=self.out)

    def note(self, line: str) -> None:
        """Progress and hints: on stderr, so stdout stays clean for ``--json`` and pipes."""
        print(line, file=self.err, flush=True)
