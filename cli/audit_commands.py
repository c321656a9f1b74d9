"""``gatepass audit verify`` and ``audit forward``: check the audit trail on the data directory, send it to syslog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_audit_commands(subparsers: Subparsers) -> None:
    """Register ``audit`` with ``verify`` and ``forward``; cli.client_audit adds ``export`` to the same command."""
    audit = subparsers.add_parser("audit", help="verify or export the audit trail")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the audit hash chain and each session recording against its "
                                               "recorded hash; exit 0 only if all are intact")
    data_option(verify)
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--anchor", action="append", default=[], metavar="SEQ:HASH",
                        help="an anchor printed by an earlier verify and kept outside the database; the event "
                             "must still match it (catches a chain rewritten by someone with database rights)")
    verify.add_argument("--recordings", type=Path, metavar="DIR",
                        help="where the session recordings are (default DATA/recordings, where `gatepass serve` "
                             "keeps them; give the gateways' --recordings directory for a separate gateway)")
    verify.set_defaults(func=guarded(_verify))
    forward = actions.add_parser(
        "forward", help="send the audit trail to a syslog collector (RFC 5424 over TCP/TLS), resuming where it stopped")
    data_option(forward)
    forward.add_argument("--to", required=True, metavar="URL", help="the collector: tcp://HOST:PORT or tls://HOST:PORT")
    forward.add_argument("--ca-file", type=Path, help="CA certificate(s) to check a tls:// collector against "
                                                       "(default: the system's trust store)")
    forward.add_argument("--once", action="store_true", help="send what is there now, then exit")
    forward.set_defaults(func=guarded(_forward))


def _verify(args: argparse.Namespace) -> int:
    import json

    from broker import admin
    from broker.audit.trail import Anchor

    anchors = tuple(Anchor.parse(text) for text in args.anchor)
    verification = admin.verify_audit(local_settings(args), anchors=anchors, recordings_dir=args.recordings)
    result, recordings = verification.chain, verification.recordings
    if args.json:
        print(json.dumps({"ok": verification.ok, "chain_ok": result.ok, "events_checked": result.events_checked,
                          "problem": result.problem, "first_bad_seq": result.first_bad_seq, "anchor": result.anchor,
                          "recordings_checked": recordings.checked, "recording_problems": recordings.problems,
                          "recordings_purged": recordings.purged, "recordings_on_gateways": recordings.on_gateways,
                          "recordings_on_gateways_by": recordings.on_gateways_by}))
        return 0 if verification.ok else 1
    if result.ok:
        print(f"Audit trail intact: {result.events_checked} events, hash chain verified"
              f"{f', {len(anchors)} anchor(s) matched' if anchors else ''}.")
        print(f"Anchor (keep it outside this system; pass it to a later verify with --anchor): {result.anchor}")
    else:
        print(f"gatepass: AUDIT TRAIL BROKEN at event {result.first_bad_seq}: {result.problem} "
              f"({result.events_checked} events verified before it)", file=sys.stderr)
    for problem in recordings.problems:
        print(f"gatepass: RECORDING FAILED: {problem}", file=sys.stderr)
    if recordings.ok:
        print(f"Recordings intact: {recordings.checked} recordings checked against their recorded hashes.")
    else:
        print(f"gatepass: {recordings.checked} recordings checked, {len(recordings.problems)} problem(s) found",
              file=sys.stderr)
    if recordings.purged:
        print(f"{recordings.purged} of them purged under retention, each proved by its audit event "
              "(retention:recording:purged, with the file's SHA-256 and size).")
    if recordings.on_gateways:
        held = ", ".join(f"{count} on {name}" for name, count in sorted(recordings.on_gateways_by.items()))
        print(f"{recordings.on_gateways} of them still on the separate gateways that recorded them ({held}), to be "
              "uploaded (checked against their hashes when they arrive).")
    return 0 if verification.ok else 1


def _forward(args: argparse.Namespace) -> int:
    import signal
    import threading

    from broker.audit import siem_forward
    from broker.db import make_engine, make_session_factory

    settings = local_settings(args)
    destination = siem_forward.Destination.parse(args.to)
    if not settings.master_key_path.exists():
        raise FileNotFoundError(f"{settings.data_dir} is not a Gatepass data directory: run `gatepass init` first")
    engine = make_engine(settings.effective_database_url)
    try:
        forwarder = siem_forward.Forwarder(session_factory=make_session_factory(engine), destination=destination,
                                           clock=settings.clock, ssl_context=destination.ssl_context(args.ca_file))
        if args.once:
            try:
                sent = forwarder.drain()
            except (siem_forward.ForwardError, OSError) as error:
                print(f"gatepass: forwarding to {destination.url} stopped at event {forwarder.cursor()}: {error}",
                      file=sys.stderr)
                return 1
            print(f"Forwarded {sent} events to {destination.url}; its cursor is at event {forwarder.cursor()}.")
            return 0
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        print(f"Forwarding the audit trail to {destination.url} from event {forwarder.cursor() + 1}; "
              "Ctrl-C stops.", flush=True)
        forwarder.run(stop)
        return 0
    finally:
        engine.dispose()
