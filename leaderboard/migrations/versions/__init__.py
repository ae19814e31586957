"""One Alembic revision per file, oldest first."""
