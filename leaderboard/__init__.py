"""The results leaderboard: store, submission validation, web app and page, client.

Modules, one job each:

- :mod:`~tokbench.leaderboard.models` — the database tables (SQLAlchemy Core).
- :mod:`~tokbench.leaderboard.store` — the one module that talks to the database
  (SQLite in WAL mode by default, PostgreSQL via a ``postgresql://`` URL), migrated by Alembic.
- :mod:`~tokbench.leaderboard.validation` — what a submission must satisfy, with refusals
  that name the field and the reason.
- :mod:`~tokbench.leaderboard.query` — entry filters and sort keys (whitelisted).
- :mod:`~tokbench.leaderboard.app` — the FastAPI app (JSON API + HTML pages).
- :mod:`~tokbench.leaderboard.render` / :mod:`~tokbench.leaderboard.plot` — the page and its
  rate–distortion plot, shared by the server and the static export.
- :mod:`~tokbench.leaderboard.client` — ``tokbench submit`` and reading a remote leaderboard.
- :mod:`~tokbench.leaderboard.cli` — the ``submit`` and ``leaderboard`` commands.
"""
