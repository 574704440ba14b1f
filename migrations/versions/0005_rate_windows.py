"""Rate windows for every limit (sharded time buckets) instead of the devices' own; an index
for the retention job's token purge

The device registration counters are not carried over: they count for an hour at most, so a
deployment forgets at worst one hour of registrations.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rate_windows',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('bucket_started_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('shard', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', 'bucket_started_at', 'shard', name=op.f('pk_rate_windows'))
    )
    with op.batch_alter_table('rate_windows', schema=None) as batch_op:
        batch_op.create_index('ix_rate_windows_expires_at', ['expires_at'], unique=False)

    op.drop_table('device_rate_windows')
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_one_time_tokens_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_one_time_tokens_expires_at')

    op.create_table('device_rate_windows',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('window_started_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_device_rate_windows'))
    )
    with op.batch_alter_table('rate_windows', schema=None) as batch_op:
        batch_op.drop_index('ix_rate_windows_expires_at')

    op.drop_table('rate_windows')
