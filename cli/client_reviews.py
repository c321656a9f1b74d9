"""``gatepass reviews`` and ``gatepass attest``: the access reviews the signed-in person owes, and their decision."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from cli.context import Context
from cli.errors import UsageError
from cli.output import table, to_json


def reviews_table(reviews: Sequence[Mapping[str, Any]]) -> str:
    if not reviews:
        return "No reviews due."
    rows = []
    for review in reviews:
        usage = review.get("usage") or {}
        due = str(review.get("due_at") or "")[:10]
        rows.append([str(review.get("username")), str(review.get("kind")), str(review.get("status")),
                     ("OVERDUE " if review.get("overdue") else "") + due,
                     f"{usage.get('grants', 0)} grants, {usage.get('sessions', 0)} sessions",
                     ", ".join(usage.get("assets") or []) or "-", str(review.get("why_you") or "")])
    return table(["NAME", "KIND", "STATUS", "DUE", "SINCE LAST REVIEW", "ASSETS", "WHY YOU"], rows)


def run_reviews(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        reviews = api.get("/reviews", params={"all": "true"} if args.all else None)
    ctx.say(to_json(reviews) if args.json else reviews_table(reviews))
    return 0


def run_attest(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    comment = args.comment.strip()
    if not comment:
        raise UsageError("--comment must say what you checked: the review is kept for security")
    with ctx.api() as api:
        answer: dict[str, Any] = api.post(f"/identities/{args.name}/attest",
                                          {"outcome": args.outcome, "comment": comment})
    if args.json:
        ctx.say(to_json(answer))
    elif answer.get("outcome") == "keep":
        ctx.say(f"Kept {args.name}; next review due {str(answer.get('attestation_due_at'))[:10]}.")
    else:
        ctx.say(f"Revoked {args.name}: it is now {answer.get('status')}, its grants ended and its sessions were cut.")
    return 0
