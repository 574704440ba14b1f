"""The console's bulk-move jobs (issue 18): progress and per-row report in the database, so
any server process can show them

Revision ID: 0007
Revises: 0006

Self-contained: one table, no change to another.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_enrolment_jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('admin_user_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('progress_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('done_rows', sa.Integer(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('report', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['admin_user_id'], ['users.id'], name=op.f('fk_console_enrolment_jobs_admin_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_enrolment_jobs'))
    )
    with op.batch_alter_table('console_enrolment_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_console_enrolment_jobs_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_enrolment_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_console_enrolment_jobs_created_at')

    op.drop_table('console_enrolment_jobs')
