"""Staff sign-in through the plant's identity provider (issue 11): identities linked to an OpenID provider's
subject (issuer and subject, unique together), and API tokens that remember a sign-in without a second factor.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('identities') as batch:
        batch.add_column(sa.Column('oidc_issuer', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('oidc_subject', sa.String(length=255), nullable=True))
        batch.create_unique_constraint('uq_identities_oidc_subject', ['oidc_issuer', 'oidc_subject'])
    # Every token issued so far came from a password and a one-time code (or a workload's key): none lacks MFA.
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('without_mfa', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # People who only ever signed in with their company account keep their identity (the trail names them) but
    # have no credential left to sign in with until OpenID Connect is back.
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('without_mfa')
    with op.batch_alter_table('identities') as batch:
        batch.drop_constraint('uq_identities_oidc_subject', type_='unique')
        batch.drop_column('oidc_subject')
        batch.drop_column('oidc_issuer')
