"""CSC API: the SAD of a signing request (credentials/authorize -> signatures/signHash)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authorized_at', app.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sad_mac', sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column('sad_expires_at', app.db.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.drop_column('sad_expires_at')
        batch_op.drop_column('sad_mac')
        batch_op.drop_column('authorized_at')
