"""Gateway report receipts: a report sent again after its answer was lost is recorded once.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'gateway_report_receipts',
        sa.Column('gateway_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id']),
        sa.PrimaryKeyConstraint('gateway_id', 'key'),
    )
    op.create_index('ix_gateway_report_receipts_received_at', 'gateway_report_receipts', ['received_at'])


def downgrade() -> None:
    op.drop_index('ix_gateway_report_receipts_received_at', table_name='gateway_report_receipts')
    op.drop_table('gateway_report_receipts')
