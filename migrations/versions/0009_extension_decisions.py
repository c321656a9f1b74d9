"""One approval rule, one table shape: a grant extension's approvals and denial move from a JSON list and two
columns on ``grant_extensions`` into ``extension_decisions``, shaped like a request's ``decisions`` (one row per
approver, unique per extension, so "distinct approvers" is a schema fact for extensions too).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 03:10:00
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _when(value: Any, fallback: Any) -> Any:
    """A decided_at (ISO text in the JSON list; a timestamp, or text on SQLite, in a column) as a timestamp;
    the extension's own time when missing."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return fallback


def upgrade() -> None:
    # Read the old shape first: on SQLite, dropping columns rebuilds grant_extensions, which a table already
    # pointing at it by foreign key would refuse.
    connection = op.get_bind()
    ids = dict(connection.execute(sa.text("SELECT username, id FROM identities")).all())
    rows = connection.execute(sa.text(
        "SELECT id, approvals, denied_by, denial_comment, decided_at, created_at FROM grant_extensions")).all()
    moved = []
    for extension_id, approvals, denied_by, denial_comment, decided_at, created_at in rows:
        for approval in json.loads(approvals) if isinstance(approvals, str) else approvals or []:
            moved.append({"extension_id": extension_id, "approver_id": approval["approver_id"],
                          "verdict": "approve", "comment": approval.get("comment"),
                          "decided_at": _when(approval.get("decided_at"), created_at)})
        if denied_by is not None and denied_by in ids:
            moved.append({"extension_id": extension_id, "approver_id": ids[denied_by], "verdict": "deny",
                          "comment": denial_comment, "decided_at": _when(decided_at, created_at)})
    with op.batch_alter_table('grant_extensions') as batch:
        batch.drop_column('approvals')
        batch.drop_column('denied_by')
        batch.drop_column('denial_comment')
    decisions = op.create_table(
        'extension_decisions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('extension_id', sa.String(length=16), nullable=False),
        sa.Column('approver_id', sa.Integer(), nullable=False),
        sa.Column('verdict', sa.String(length=8), nullable=False),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['extension_id'], ['grant_extensions.id']),
        sa.ForeignKeyConstraint(['approver_id'], ['identities.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('extension_id', 'approver_id'),
    )
    if moved:
        op.bulk_insert(decisions, moved)


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT d.extension_id, d.verdict, d.comment, d.decided_at, i.username, i.id FROM extension_decisions d "
        "JOIN identities i ON i.id = d.approver_id ORDER BY d.id")).all()
    op.drop_table('extension_decisions')
    with op.batch_alter_table('grant_extensions') as batch:
        batch.add_column(sa.Column('approvals', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('denied_by', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('denial_comment', sa.Text(), nullable=True))
    approvals: dict[str, list[dict[str, Any]]] = {}
    for extension_id, verdict, comment, decided_at, username, approver_id in rows:
        when = decided_at if isinstance(decided_at, str) else decided_at.isoformat()
        if verdict == "approve":
            approvals.setdefault(extension_id, []).append(
                {"approver": username, "approver_id": approver_id, "comment": comment, "decided_at": when})
        else:
            connection.execute(sa.text("UPDATE grant_extensions SET denied_by = :who, denial_comment = :why "
                                       "WHERE id = :id"), {"who": username, "why": comment, "id": extension_id})
    for extension_id, listed in approvals.items():
        connection.execute(sa.text("UPDATE grant_extensions SET approvals = :list WHERE id = :id"),
                           {"list": json.dumps(listed), "id": extension_id})
