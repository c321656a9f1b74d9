"""``gatepass admin recording hold|release|purge``: evidence holds and the retention purge, on the data directory
(audited, as the operator ``cli:<user>``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_recording_commands(objects: Subparsers) -> None:
    recording = objects.add_parser("recording", help="keep session recordings as evidence, purge those past retention")
    verbs = recording.add_subparsers(dest="verb", required=True)
    hold = verbs.add_parser("hold", help="keep a session's recording as evidence: never purged until released")
    hold.add_argument("session", metavar="SESSION")
    hold.add_argument("--reason", required=True, help="why (kept with the hold and in the audit trail)")
    data_option(hold)
    hold.set_defaults(func=guarded(_hold))
    release = verbs.add_parser("release", help="release the holds on a session's recording (or a playbook run's): "
                                               "it then follows its site's retention again")
    release.add_argument("session", metavar="SESSION", nargs="?")
    release.add_argument("--run", metavar="RUN_ID", help="release the holds this playbook run took instead")
    release.add_argument("--reason", required=True, help="why (kept with the hold and in the audit trail)")
    data_option(release)
    release.set_defaults(func=guarded(_release))
    purge = verbs.add_parser("purge", help="delete the recordings past their site's retention and not on hold "
                                           "(the broker does this by itself every few minutes)")
    purge.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    purge.add_argument("--json", action="store_true")
    data_option(purge)
    purge.set_defaults(func=guarded(_purge))


def _hold(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.recordings import holds

    settings = local_settings(args)
    admin.run(settings, lambda session, _vault: holds.hold(
        session, now=settings.clock.now(), actor=holds.Actor(admin.operator_name()), session_id=args.session,
        reason=args.reason))
    print(f"Recording of session {args.session} is on hold as evidence: it is kept past any retention until "
          "released (`gatepass admin recording release`).")
    return 0


def _release(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.recordings import holds

    if (args.session is None) == (args.run is None):
        print("gatepass: give a SESSION or --run RUN_ID (one of them)", file=sys.stderr)
        return 2
    settings = local_settings(args)
    actor = holds.Actor(admin.operator_name())
    if args.run is not None:
        released = admin.run(settings, lambda session, _vault: holds.release_run(
            session, now=settings.clock.now(), actor=actor, run_id=args.run, reason=args.reason))
        print(f"Released the holds of playbook run {args.run} on {len(released)} recording(s): "
              f"{', '.join(released)}. Other holds on them stay.")
        return 0
    released_holds = admin.run(settings, lambda session, _vault: len(holds.release(
        session, now=settings.clock.now(), actor=actor, session_id=args.session, reason=args.reason)))
    print(f"Released {released_holds} hold(s) on the recording of session {args.session}: it follows its site's "
          "retention again.")
    return 0


def _purge(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.db import make_engine, make_session_factory
    from broker.recordings import purge
    from broker.recordings.store import recordings_dir

    settings = local_settings(args)
    if not settings.master_key_path.exists():
        raise FileNotFoundError(f"{settings.data_dir} is not a Gatepass data directory: run `gatepass init` first")
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)
        now, days, directory = settings.clock.now(), settings.recording_retention_days, recordings_dir(settings)
        report = purge.plan(sessions, now=now, default_days=days, directory=directory) if args.dry_run else \
            purge.purge(sessions, now=now, default_days=days, directory=directory, actor=admin.operator_name())
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict()))
        return 1 if report.problems else 0
    verb = "Would purge" if args.dry_run else "Purged"
    print(f"{verb} {len(report.purged)} recording(s), {report.bytes_freed} bytes"
          f"{':' if report.purged else '.'}")
    for item in report.purged:
        print(f"  {item.session_id}  {item.site}  {item.name}  {item.size} bytes  ended "
              f"{item.ended_at:%Y-%m-%d %H:%M} UTC  retention {item.retention.describe()}  sha256 {item.sha256}")
    for item in report.kept:
        print(f"  kept {item.session_id}: {item.problem}")
    for problem in report.problems:
        print(f"gatepass: {problem}", file=sys.stderr)
    return 1 if report.problems else 0
