"""Closed sets of values as CHECK constraints (``broker/vocabulary.py`` names them as StrEnums): a kind, role,
status or verdict outside its set is refused by the database, whoever writes it. Rows already outside a set
would stop this migration with the database's own error; none can exist, as the broker only ever wrote these.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 03:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# (table, column, allowed values, may be NULL): written out, as migrations never import app code.
CHECKS = [
    ('sites', 'transfers', ('both', 'download_only'), False),
    ('assets', 'criticality', ('low', 'high'), False),
    ('assets', 'credential_kind', ('password', 'private_key'), True),
    ('identities', 'kind', ('human', 'service', 'ai_agent'), False),
    ('sign_in_throttles', 'scope', ('source', 'account_source', 'account'), False),
    ('role_assignments', 'role', ('vendor', 'supervisor', 'security', 'admin'), False),
    ('access_requests', 'status', ('pending', 'approved', 'denied', 'expired', 'cancelled'), False),
    ('decisions', 'verdict', ('approve', 'deny'), False),
    ('sessions', 'kind', ('shell', 'exec', 'sftp', 'tcp'), False),
    ('grant_changes', 'status', ('active', 'revoked'), False),
    ('grant_extensions', 'status', ('pending', 'approved', 'denied', 'lapsed'), False),
    ('extension_decisions', 'verdict', ('approve', 'deny'), False),
    ('notifications', 'channel', ('webhook', 'email'), False),
    ('notifications', 'status', ('pending', 'sent', 'failed'), False),
]


def _condition(column: str, values: tuple[str, ...], nullable: bool) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IS NULL OR {column} IN ({listed})" if nullable else f"{column} IN ({listed})"


def upgrade() -> None:
    for table in dict.fromkeys(table for table, *_ in CHECKS):
        with op.batch_alter_table(table) as batch:
            for _table, column, values, nullable in (check for check in CHECKS if check[0] == table):
                batch.create_check_constraint(f"ck_{table}_{column}", _condition(column, values, nullable))


def downgrade() -> None:
    for table in dict.fromkeys(table for table, *_ in CHECKS):
        with op.batch_alter_table(table) as batch:
            for _table, column, _values, _nullable in (check for check in CHECKS if check[0] == table):
                batch.drop_constraint(f"ck_{table}_{column}", type_="check")
