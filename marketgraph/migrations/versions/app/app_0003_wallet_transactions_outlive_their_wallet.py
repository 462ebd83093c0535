"""wallet transactions outlive their wallet (erasure)

An erased user's wallet is deleted while its transactions are kept for accounting:
`wallet_id` becomes nullable, and deleting a wallet sets it to null instead of deleting
the wallet's transactions with it.

Revision ID: app_0003
Revises: app_0002
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'app_0003'
down_revision: str | Sequence[str] | None = 'app_0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = 'fk_wallet_transactions_wallet_id_wallets'


def upgrade() -> None:
    op.alter_column('wallet_transactions', 'wallet_id', existing_type=sa.Uuid(), nullable=True)
    op.drop_constraint(op.f(FK), 'wallet_transactions', type_='foreignkey')
    op.create_foreign_key(
        op.f(FK), 'wallet_transactions', 'wallets', ['wallet_id'], ['id'], ondelete='SET NULL'
    )


def downgrade() -> None:
    # Erased users' transactions have no wallet to point at any more: refuse rather than
    # delete accounting rows.
    detached = op.get_bind().scalar(
        sa.text('SELECT count(*) FROM wallet_transactions WHERE wallet_id IS NULL')
    )
    if detached:
        raise RuntimeError(
            f'{detached} wallet transactions of erased users have no wallet; '
            'app_0002 cannot hold them (keep them elsewhere first)'
        )
    op.drop_constraint(op.f(FK), 'wallet_transactions', type_='foreignkey')
    op.create_foreign_key(
        op.f(FK), 'wallet_transactions', 'wallets', ['wallet_id'], ['id'], ondelete='CASCADE'
    )
    op.alter_column('wallet_transactions', 'wallet_id', existing_type=sa.Uuid(), nullable=False)
