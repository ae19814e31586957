"""Alembic migrations of the leaderboard database (applied by :func:`tokbench.leaderboard.store.migrate`)."""
