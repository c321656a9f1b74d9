"""Which command an exec channel may run: under an AI agent's delegated grant, only the argv lists its sponsor
delegated (``Authorization.allowed_commands``), compared word for word with the client's command.

The client's command is split the way a POSIX shell splits words (``shlex``), never searched for a substring,
and what then reaches the target is the delegated argv re-quoted (``shlex.join``), not the client's text: two
strings that split alike may still mean different things to the target's shell (``a;b`` is one word to
``shlex`` and two commands to ``sh``), so the target only ever runs exactly what was delegated.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from gateway.models import Authorization

# A refusal goes to the broker's audit trail (at most 1000 characters there) and to the user's terminal.
MAX_SHOWN_COMMAND = 120
MAX_SHOWN_ALLOWED = 4


@dataclass(frozen=True)
class ExecVerdict:
    """What the gateway does with one exec request: run ``command`` on the target, or refuse with ``refusal``
    (one line for the user's stderr and the audit trail, without the ``gatepass:`` prefix)."""

    command: str | None
    refusal: str | None = None


def judge_exec(auth: Authorization, command: str) -> ExecVerdict:
    """The verdict on ``command`` under ``auth``: any command when the grant lists none (None), else one of the
    listed argv lists exactly, run in its canonical quoting."""
    allowed = auth.allowed_commands
    if allowed is None:
        return ExecVerdict(command=command)
    shown = _shown(command)
    if not allowed:
        return ExecVerdict(None, f"{auth.identity} may run no command on {auth.asset}: its sponsor delegated none "
                                 f"(refused: `{shown}`)")
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        return ExecVerdict(None, f"the command `{shown}` cannot be split into words ({exc}); {auth.identity} may "
                                 f"run only the commands its sponsor delegated: {_listing(allowed)}")
    if argv in allowed:
        return ExecVerdict(command=shlex.join(argv))
    return ExecVerdict(None, f"{auth.identity} may run only the commands its sponsor delegated on {auth.asset}, "
                             f"word for word; `{shown}` is not one of them (allowed: {_listing(allowed)})")


def _shown(command: str) -> str:
    text = command.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= MAX_SHOWN_COMMAND else text[: MAX_SHOWN_COMMAND - 1] + "…"


def _listing(allowed: tuple[tuple[str, ...], ...]) -> str:
    shown = ", ".join(f"`{_shown(shlex.join(argv))}`" for argv in allowed[:MAX_SHOWN_ALLOWED])
    more = len(allowed) - MAX_SHOWN_ALLOWED
    return shown + (f" and {more} more" if more > 0 else "")
