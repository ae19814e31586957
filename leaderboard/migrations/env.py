"""Alembic environment: runs on the connection that :func:`tokbench.leaderboard.store.migrate` passes in."""
from alembic import context

from tokbench.leaderboard.models import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
