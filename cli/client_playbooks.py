"""``gatepass playbook list|edit|run|drill|runs``: the plant's rehearsed, one-action responses, over the API."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from cli.context import Context
from cli.errors import UsageError
from cli.output import table, to_json


def run_list(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        found = api.get("/playbooks")
    if args.json:
        ctx.say(to_json(found))
        return 0
    for playbook in found:
        ctx.say(f"{playbook['name']} (v{playbook['version']}): {playbook['description']}")
        for number, step in enumerate(playbook["steps"], 1):
            ctx.say(f"  {number}. {step['text']}")
    return 0


def run_edit(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    if not steps:
        raise UsageError("--steps names at least one step, e.g. --steps lock_down_site,notify")
    body: dict[str, Any] = {"steps": steps, "description": args.description}
    with ctx.api() as api:
        playbook: dict[str, Any] = api.put(f"/playbooks/{args.name}", body)
    if args.json:
        ctx.say(to_json(playbook))
        return 0
    ctx.say(f"Playbook {playbook['name']} is now version {playbook['version']}:")
    for number, step in enumerate(playbook["steps"], 1):
        ctx.say(f"  {number}. {step['text']}")
    return 0


def report_text(report: Mapping[str, Any]) -> str:
    planned = report.get("drill") and not report.get("executed")
    lines = [f"{'Drill (nothing changed)' if planned else 'Ran'} {report.get('playbook')} "
             f"v{report.get('version')} ({report.get('run_id')})"
             + (f" at {report['site']}" if report.get("site") else "")
             + (f" on {report['identity']}" if report.get("identity") else "")
             + (f" in {report.get('elapsed_ms')} ms" if not planned else "") + ":"]
    for number, step in enumerate(report.get("steps") or [], 1):
        touched = [f"{len(step[key])} {key}" for key in ("grants", "sessions", "identities", "recordings",
                                                         "recipients") if step.get(key)]
        lines.append(f"  {number}. {step['text']}" + (f" — {', '.join(touched)}" if touched else ""))
        for key in ("identities", "sessions", "recipients"):
            if step.get(key):
                lines.append(f"       {key}: {', '.join(step[key][:20])}{' …' if len(step[key]) > 20 else ''}")
        if step.get("skipped"):
            lines.append(f"       skipped: {step['skipped']}")
    return "\n".join(lines)


def run_playbook(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if not args.reason.strip():
        raise UsageError("--reason must say why: the people cut off and the audit trail read it")
    body: dict[str, Any] = {"site": args.site, "identity": args.identity, "reason": args.reason.strip()}
    if args.verb_name == "drill":
        body["execute"] = args.execute_on_drill_site
    with ctx.api() as api:
        report: dict[str, Any] = api.post(f"/playbooks/{args.name}/{args.verb_name}", body)
    ctx.say(to_json(report) if args.json else report_text(report))
    return 0


def run_runs(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        runs = api.get("/playbooks/runs")
    if args.json:
        ctx.say(to_json(runs))
        return 0
    if not runs:
        ctx.say("No playbook runs yet.")
        return 0
    rows = [[r["run_id"], r["at"][:19], r["playbook"], "drill" if r["drill"] else "run",
             r.get("site") or r.get("identity") or "-", str(r["sessions_cut"]),
             "-" if r["seconds_to_contain"] is None else f"{r['seconds_to_contain']:.2f} s"]
            for r in runs]
    ctx.say(table(["RUN", "AT (UTC)", "PLAYBOOK", "KIND", "TARGET", "SESSIONS CUT", "TO CONTAIN"], rows))
    return 0


def run_posture(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        report: dict[str, Any] = api.get("/posture", params={"days": str(args.days)})
    if args.json:
        ctx.say(to_json(report))
        return 0
    now, before = report["current"], report["previous"]
    rows = [
        ["access reviews on time / overdue (now)", f"{now['reviews_on_time']} / {now['reviews_overdue']}", "-"],
        ["people with a second factor (now)", f"{now['people_with_second_factor']} of {now['people']}", "-"],
        ["grants", str(sum(now["grants_by_site"].values())), str(sum(before["grants_by_site"].values()))],
        ["sessions outside maintenance windows", f"{now['sessions_outside_windows']} of {now['sessions']}",
         f"{before['sessions_outside_windows']} of {before['sessions']}"],
        ["flags", str(sum(now["flags_by_outcome"].values())), str(sum(before["flags_by_outcome"].values()))],
        ["revoke to cut, median ms", str(now["revoke_to_cut_ms"].get("median")),
         str(before["revoke_to_cut_ms"].get("median"))],
        ["playbook runs / drills", f"{now['playbook_runs']} / {now['drills']}",
         f"{before['playbook_runs']} / {before['drills']}"],
    ]
    ctx.say(f"Posture, the last {report['days']} days (previous period beside it):")
    ctx.say(table(["figure", "this period", "previous"], rows))
    return 0
