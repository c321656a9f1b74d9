"""Gateways scoped to sites (the credentials a gateway may be handed) and retired gateways.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No rows for the gateways that exist now: they keep serving every site, as before.
    op.create_table(
        'gateway_sites',
        sa.Column('gateway_id', sa.Integer(), nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id']),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id']),
        sa.PrimaryKeyConstraint('gateway_id', 'site_id'),
    )
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gateways') as batch:
        batch.drop_column('retired_at')
    op.drop_table('gateway_sites')
