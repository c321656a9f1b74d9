"""The gateway's exceptions, in one tree.

::

    GatewayError                      anything the gateway refuses or cannot do
    ├── BrokerCallFailed              talking to the broker over the gateway API failed
    │   ├── BrokerUnavailable         no answer: network error, timeout, 5xx
    │   ├── BrokerRefused             a 4xx with the broker's {"error", "message"}
    │   └── BrokerProtocolError       an answer that does not match docs/API.md
    ├── CertificateRefused            a client certificate that is not a grant certificate
    ├── TargetError                   the gateway cannot reach the asset behind it
    │   ├── TargetNotPinned           the asset has no pinned SSH host key
    │   └── TargetUnreachable         connecting or logging in to the target failed
    ├── TapFailure (taps)             a recorder or inspector cannot go on: the session ends (fail closed)
    │   ├── RecordingFailure (recording)    the recording cannot be written
    │   └── RecordingsRefused (recording)   the site's recordings failed: new recorded sessions are refused
    ├── MalformedPacket (sftp_protocol)     bytes that are not an SFTP v3 packet
    ├── MalformedFrame (modbus)       bytes that are not Modbus/TCP
    └── SweepFailed (stopping)        the target did not run the cut's process sweep

The ones named with a module live beside the code that raises them (they are that module's business); they
join this tree so that ``except GatewayError`` means every refusal or failure the gateway raises on purpose.

Every message says what was refused and why, in words a vendor or supervisor understands:
the SSH-facing code shows ``str(exc)`` to the user as is.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class for everything the gateway raises on purpose."""


class BrokerCallFailed(GatewayError):
    """The gateway API call did not give a usable answer."""


class BrokerUnavailable(BrokerCallFailed):
    """The broker did not answer (network error, timeout, 5xx); ``status`` is the 5xx when it answered one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BrokerRefused(BrokerCallFailed):
    """The broker answered with a 4xx refusal; ``message`` is meant for the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BrokerProtocolError(BrokerCallFailed):
    """The broker's answer did not match the gateway API contract."""


class CertificateRefused(GatewayError):
    """The client's certificate is not a valid grant certificate."""


class TargetError(GatewayError):
    """The gateway cannot open the connection to the target asset."""


class TargetNotPinned(TargetError):
    """The asset has no pinned host key, so the gateway will not connect to it."""


class TargetUnreachable(TargetError):
    """Connecting or logging in to the target failed."""
