"""The client's error hierarchy; ``main`` prints each as ``gatepass: <message>`` and exits with its code.

    ClientError                   exit 1   base: something was refused or failed; the message says why
    ├── UsageError                exit 2   the command line itself is wrong (bad duration, port, format)
    ├── NotLoggedIn               exit 1   no session, or it expired or was revoked: log in again
    ├── ServerUnreachable         exit 1   the broker could not be reached or answered nonsense
    ├── ApiError                  exit 1   the broker refused: carries its status and stable ``error`` code
    ├── NoUsableGrant             exit 1   ``ssh``/``tunnel``/``ssh-config`` found nothing to connect with
    └── LocalSetupError           exit 1   the state directory, the SSH key or the ssh binary is unusable

Messages are written for a vendor or a supervisor: what was refused, why, and what to do next. They
never contain a token, a password or a private key.
"""

from __future__ import annotations


class ClientError(Exception):
    """A failure the user can act on; ``str(error)`` is the whole message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ClientError):
    exit_code = 2


class NotLoggedIn(ClientError):
    pass


class ServerUnreachable(ClientError):
    pass


class ApiError(ClientError):
    """The broker answered with a 4xx/5xx; ``code`` is its stable error code (``forbidden``…)."""

    def __init__(self, message: str, *, status_code: int, code: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class NoUsableGrant(ClientError):
    pass


class LocalSetupError(ClientError):
    pass
