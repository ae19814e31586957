"""The leaderboard's database: the only module that talks to it.

``Store(url)`` opens SQLite (a file, WAL journal, full fsync on commit, so an acknowledged
submission survives a crash of the server) or PostgreSQL (``postgresql://...``, through
psycopg), brings the schema to the newest Alembic revision, and offers: API tokens
(created once, stored hashed, revocable), adding a submission (one transaction; duplicates
refused atomically through a unique key), and listing/reading entries.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import and_, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from tokbench.comparability import Setting, protocol_name, recognizer, task_settings
from tokbench.metrics.registry import get_metric, is_registered
from tokbench.leaderboard.models import api_tokens, metric_values, submissions
from tokbench.leaderboard.models import task_settings as task_settings_table
from tokbench.leaderboard.query import SORT_COLUMNS, EntryQuery
from tokbench.leaderboard.validation import Candidate, Problem, Refused

TOKEN_PREFIX = "tbk_"
MIGRATIONS = Path(__file__).parent / "migrations"


def _direction(metric: str, stored: bool) -> bool:
    """The registry's direction; the stored one only for a metric whose plug-in is not installed here."""
    return get_metric(metric).higher_is_better if is_registered(metric) else stored


def hash_token(token: str) -> str:
    """SHA-256 hex digest of an API token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(stamp: datetime) -> str:
    # SQLite hands back naive datetimes; every stamp we store is UTC.
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).isoformat(timespec="seconds")


@dataclass
class TokenInfo:
    """An API token as listed (never the token itself)."""

    id: int
    name: str
    created: str
    revoked: bool
    submissions: int = 0


@dataclass
class Entry:
    """One stored submission as the API and the page show it."""

    id: int
    created: str
    status: str
    reasons: list[dict[str, str]]
    tokenizer: str
    family: str
    kind: str
    checkpoint_sha256: str | None
    parameters: int
    tokens_per_image: float | None
    bits_per_image: float | None
    tokbench_version: str
    submitted_by: str
    # task -> metric -> {"mean", "ci95": [lo, hi], "n", "higher_is_better"}
    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    protocol: str | None = None  # the protocol preset's name; None: none
    # task -> {"suite", "resolution", "recognizer"}: what the task was scored on (see `setting`)
    settings: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        """The inverse of :meth:`to_dict` (used by clients of the JSON API); fields a server
        older than this client does not send keep their defaults."""
        required = {k for k, f in cls.__dataclass_fields__.items() if f.default is f.default_factory is MISSING}
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in required or k in data})

    def setting(self, task: str) -> Setting | None:
        """The (suite, protocol, resolution) ``task`` was scored under; None if it was not run."""
        recorded = self.settings.get(task)
        if recorded is None:
            return None
        return Setting(recorded["suite"], self.protocol, recorded.get("resolution"))


def engine_for(url: str) -> Engine:
    """An engine for a ``sqlite:///FILE`` or ``postgresql://`` URL, set up for this store."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ValueError(f"not a database URL: {url!r} (use sqlite:///FILE or postgresql://USER@HOST/DB)") from err
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql://...")
    if parsed.database in (None, "", ":memory:"):
        raise ValueError("the leaderboard needs a SQLite file (sqlite:///path/to/leaderboard.db), not an in-memory database")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (so DDL in
        # migrations is transactional), then set WAL, durable commits, foreign keys.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Writers take the write lock up front: no deadlock between two read-then-write
        # transactions, and they queue on busy_timeout instead of failing.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _alembic_config(connection) -> Config:  # noqa: ANN001
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> str:
    """Bring the database to the newest revision (creating it if empty); returns that revision."""
    script = ScriptDirectory.from_config(_alembic_config(None))
    head = script.get_current_head()
    with engine.connect().execution_options(write=True) as conn:
        with conn.begin():
            current = MigrationContext.configure(conn).get_current_revision()
        if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
            raise RuntimeError(f"the leaderboard database is at schema revision {current}, which this tokbench does "
                               f"not know (newest known: {head}); upgrade tokbench")
        if current != head:
            with conn.begin():
                command.upgrade(_alembic_config(conn), "head")
    return head


class Store:
    """The leaderboard database (see the module docstring)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = engine_for(url)
        try:
            self.revision = migrate(self.engine)
        except OperationalError as err:
            raise RuntimeError(f"cannot open the leaderboard database {make_url(url).render_as_string()}: "
                               f"{err.orig}") from err
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # -- tokens ---------------------------------------------------------------------------
    def create_token(self, name: str) -> str:
        """A new API token for ``name`` (shown once; only its hash is stored)."""
        if not name or len(name) > 100:
            raise ValueError("a token name has 1 to 100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                conn.execute(insert(api_tokens).values(name=name, token_hash=hash_token(token), created=_now()))
        except IntegrityError:
            raise ValueError(f"a token named {name!r} exists already (names are never reused)") from None
        return token

    def revoke_token(self, name: str) -> None:
        """Revoke the token called ``name``; submissions made with it stay."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            done = conn.execute(update(api_tokens).where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
                                .values(revoked_at=_now())).rowcount
        if not done:
            raise ValueError(f"no active token named {name!r}")

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, oldest first, with its number of submissions."""
        count = (select(func.count(submissions.c.id)).where(submissions.c.token_id == api_tokens.c.id)
                 .scalar_subquery())
        stmt = select(api_tokens, count.label("n")).order_by(api_tokens.c.id)
        with self.engine.connect() as conn:
            return [TokenInfo(r.id, r.name, _iso(r.created), r.revoked_at is not None, r.n) for r in conn.execute(stmt)]

    def authenticate(self, token: str) -> tuple[int, str] | None:
        """``(token id, name)`` for a valid token; ``None`` for an unknown one; ``PermissionError`` if revoked."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == hash_token(token))).first()
        if row is None:
            return None
        if row.revoked_at is not None:
            raise PermissionError(f"token {row.name!r} was revoked")
        return row.id, row.name

    # -- submissions ----------------------------------------------------------------------
    def add(self, candidate: Candidate, token_id: int) -> int:
        """Store a validated submission whole (one transaction); its id. Duplicates: :class:`Refused` (409)."""
        res, tok = candidate.results, candidate.results["tokenizer"]
        row = dict(created=_now(), token_id=token_id, status=candidate.status,
                   status_reasons=json.dumps([p.as_dict() for p in candidate.reasons]),
                   tokenizer_name=tok["name"], family=tok["family"], kind=tok["kind"],
                   checkpoint_sha256=tok["checkpoint_sha256"], parameters=tok["parameters"],
                   tokens_per_image=tok["tokens_per_image"], bits_per_image=tok["bits_per_image"],
                   tokbench_version=res["tokbench"]["version"], duplicate_key=candidate.duplicate_key,
                   results_sha256=hashlib.sha256(candidate.text.encode("utf-8")).hexdigest(),
                   results_json=candidate.text, protocol=protocol_name(res))
        # The direction is the registry's, never the submitter's (validation refused unknown names).
        metrics = [dict(task=task, metric=name, mean=m["mean"], ci_low=m["ci95"][0], ci_high=m["ci95"][1], n=m["n"],
                        higher_is_better=get_metric(name).higher_is_better)
                   for task, block in res["tasks"].items() for name, m in block["metrics"].items()]
        settings = [dict(task=task, suite=setting.suite, resolution=setting.resolution,
                         recognizer=recognizer(res["tasks"][task])) for task, setting in task_settings(res).items()]
        try:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                entry_id = conn.execute(insert(submissions).values(**row)).inserted_primary_key[0]
                if metrics:
                    conn.execute(insert(metric_values), [dict(m, submission_id=entry_id) for m in metrics])
                if settings:
                    conn.execute(insert(task_settings_table), [dict(t, submission_id=entry_id) for t in settings])
        except IntegrityError:
            existing = self.find_duplicate(candidate.duplicate_key)
            if existing is None:
                raise
            field = "$.tokenizer.checkpoint_sha256" if tok["checkpoint_sha256"] else "$.tokenizer.name"
            raise Refused(409, [Problem(field,
                                        f"duplicate of entry {existing}: same checkpoint, same datasets, same tokbench "
                                        "version")], existing_id=existing) from None
        return entry_id

    def find_duplicate(self, key: str) -> int | None:
        """Id of the entry with this duplicate key, if any."""
        with self.engine.connect() as conn:
            return conn.execute(select(submissions.c.id).where(submissions.c.duplicate_key == key)).scalar()

    def results(self, entry_id: int) -> str | None:
        """The submitted ``results.json`` verbatim, or ``None`` for an unknown id."""
        with self.engine.connect() as conn:
            return conn.execute(select(submissions.c.results_json).where(submissions.c.id == entry_id)).scalar()

    def get(self, entry_id: int) -> Entry | None:
        """One entry by id (any status)."""
        entries = self._entries(select(*self._entry_columns()).select_from(self._joined())
                                .where(submissions.c.id == entry_id))
        return entries[0] if entries else None

    def count(self) -> int:
        """Number of stored submissions."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(submissions)).scalar_one()

    def list(self, query: EntryQuery) -> list[Entry]:
        """Entries matching ``query`` (checked first), in its order."""
        query = query.checked()
        s = submissions.c
        stmt = select(*self._entry_columns()).select_from(self._joined())
        conditions = []
        if query.status != "all":
            conditions.append(s.status == query.status)
        if query.family:
            conditions.append(s.family.in_(query.family))
        if query.kind:
            conditions.append(s.kind == query.kind)
        if query.q:
            conditions.append(s.tokenizer_name.contains(query.q, autoescape=True))
        for column, low, high in ((s.tokens_per_image, query.min_tokens, query.max_tokens),
                                  (s.bits_per_image, query.min_bits, query.max_bits)):
            if low is not None:
                conditions.append(column >= low)
            if high is not None:
                conditions.append(column <= high)
        if query.task:
            has_task = select(metric_values.c.id).where(metric_values.c.submission_id == s.id,
                                                        metric_values.c.task == query.task)
            conditions.append(has_task.exists())
        stmt = stmt.where(and_(*conditions)) if conditions else stmt
        key = query.sort_key
        if key in SORT_COLUMNS:
            column = s.tokenizer_name if key == "tokenizer" else s[key]
            order = query.order or "asc"
            stmt = stmt.order_by(column.is_(None), column.desc() if order == "desc" else column.asc(), s.id)
        else:
            m = metric_values.alias("sort_metric")
            stmt = stmt.outerjoin(m, and_(m.c.submission_id == s.id, m.c.task == query.task, m.c.metric == key))
            # Best first unless told otherwise: descending where the registry says higher is better.
            if query.order is None:
                descending = is_registered(key) and get_metric(key).higher_is_better
            else:
                descending = query.order == "desc"
            stmt = stmt.order_by(m.c.mean.is_(None), m.c.mean.desc() if descending else m.c.mean.asc(), s.id)
        return self._entries(stmt.limit(query.limit).offset(query.offset))

    def tasks(self) -> list[str]:
        """Every task that some entry has metrics for."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(metric_values.c.task).distinct().order_by(metric_values.c.task)).scalars())

    def families(self) -> list[str]:
        """Every tokenizer family among the entries."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(submissions.c.family).distinct().order_by(submissions.c.family)).scalars())

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _joined():
        return submissions.join(api_tokens, api_tokens.c.id == submissions.c.token_id)

    @staticmethod
    def _entry_columns():
        s = submissions.c
        return (s.id, s.created, s.status, s.status_reasons, s.tokenizer_name, s.family, s.kind, s.checkpoint_sha256,
                s.parameters, s.tokens_per_image, s.bits_per_image, s.tokbench_version, s.protocol,
                api_tokens.c.name.label("submitted_by"))

    def _entries(self, stmt) -> list[Entry]:  # noqa: ANN001
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            ids = [r.id for r in rows]
            metrics: dict[int, dict[str, dict[str, Any]]] = {i: {} for i in ids}
            settings: dict[int, dict[str, dict[str, str | None]]] = {i: {} for i in ids}
            if ids:
                mv = metric_values.c
                for m in conn.execute(select(metric_values).where(mv.submission_id.in_(ids)).order_by(mv.id)):
                    metrics[m.submission_id].setdefault(m.task, {})[m.metric] = {
                        "mean": m.mean, "ci95": [m.ci_low, m.ci_high], "n": m.n, "higher_is_better": _direction(m.metric, m.higher_is_better)}
                ts = task_settings_table.c
                for t in conn.execute(select(task_settings_table).where(ts.submission_id.in_(ids)).order_by(ts.id)):
                    settings[t.submission_id][t.task] = {"suite": t.suite, "resolution": t.resolution,
                                                         "recognizer": t.recognizer}
        return [Entry(id=r.id, created=_iso(r.created), status=r.status, reasons=json.loads(r.status_reasons),
                      tokenizer=r.tokenizer_name, family=r.family, kind=r.kind, checkpoint_sha256=r.checkpoint_sha256,
                      parameters=r.parameters, tokens_per_image=r.tokens_per_image, bits_per_image=r.bits_per_image,
                      tokbench_version=r.tokbench_version, submitted_by=r.submitted_by, metrics=metrics[r.id],
                      protocol=r.protocol, settings=settings[r.id])
                for r in rows]
