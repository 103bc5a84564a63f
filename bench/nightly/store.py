"""The results database: SQLite by default, PostgreSQL for a shared history.

One schema for both through SQLAlchemy Core. A record is kept whole (its JSON)
and identified by the sha256 of its content, so ingest is idempotent; the
columns that queries select on (host, kernel, harness commit, config, cell,
night) are copied out of it and indexed. The schema is versioned in
`schema_version`; opening an older database applies the migrations in order.
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import sqlalchemy as sa

from .cells import cell_config, cell_key, cell_name, canonical, content_hash

SCHEMA_VERSION = 2
DEFAULT_DB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "results", "history.sqlite")


class StoreError(Exception):
    """The database cannot be used; one line."""


metadata = sa.MetaData()
schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied", sa.String(32), nullable=False))
# version 1's table; version 2 adds the fingerprint column and the night index
records = sa.Table(
    "records", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.String(40), nullable=False),      # ISO 8601 UTC, sorts as text
    sa.Column("night", sa.String(10), nullable=False),        # YYYY-MM-DD of created
    sa.Column("ingested", sa.String(40), nullable=False),
    sa.Column("hostname", sa.String(255)),
    sa.Column("boot_id", sa.String(64)),
    sa.Column("kernel_release", sa.String(255)),
    sa.Column("cpu_model", sa.String(255)),
    sa.Column("harness_commit", sa.String(64)),
    sa.Column("harness_dirty", sa.Boolean),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("cell_key", sa.String(16), nullable=False),
    sa.Column("cell_name", sa.String(255), nullable=False),
    sa.Column("mech", sa.String(64)),
    sa.Column("workload", sa.String(64)),
    sa.Column("vcpus", sa.Integer),
    sa.Column("emulated", sa.Boolean, nullable=False),
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("record_json", sa.Text, nullable=False),
    sa.Column("fingerprint_json", sa.Text),                   # version 2
    sa.Index("ix_records_hostname", "hostname"),
    sa.Index("ix_records_kernel", "kernel_release"),
    sa.Index("ix_records_commit", "harness_commit"),
    sa.Index("ix_records_config", "config_hash"),
    sa.Index("ix_records_cell_created", "cell_key", "created"),
)
V1_COLUMNS = [c for c in records.columns if c.name != "fingerprint_json"]


def _migrate_to_1(conn) -> None:
    v1 = sa.MetaData()
    sa.Table("records", v1, *[sa.Column(c.name, c.type, primary_key=c.primary_key,
                                        nullable=c.nullable, unique=c.unique,
                                        autoincrement=c.autoincrement) for c in V1_COLUMNS],
             *[sa.Index(i.name, *[c.name for c in i.columns]) for i in records.indexes])
    v1.create_all(conn)


def _migrate_to_2(conn) -> None:
    conn.execute(sa.text("ALTER TABLE records ADD COLUMN fingerprint_json TEXT"))
    conn.execute(sa.text("CREATE INDEX ix_records_night ON records (night)"))
    rows = conn.execute(sa.select(records.c.id, records.c.record_json)).all()
    for row in rows:
        fp = json.loads(row.record_json)["machine"].get("fingerprint")
        if fp:
            conn.execute(records.update().where(records.c.id == row.id)
                         .values(fingerprint_json=canonical(fp)))


MIGRATIONS = {1: _migrate_to_1, 2: _migrate_to_2}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def url_of(db: str | None) -> str:
    """--db: a SQLAlchemy URL, or a path to a SQLite file."""
    db = db or os.environ.get("FAULTBENCH_DB") or DEFAULT_DB
    if "://" in db:
        return db
    return "sqlite:///" + os.path.abspath(db)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class IngestResult:
    added: list[str]
    present: list[str]


class Store:
    def __init__(self, db: str | None = None, *, upto: int = SCHEMA_VERSION, create: bool = True):
        self.url = url_of(db)
        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"--db {db!r} is not a database URL: {exc}") from None
        if url.get_backend_name() == "sqlite" and url.database:
            if not create and not os.path.exists(url.database):
                raise StoreError(f"no history database at {url.database}")
            parent = os.path.dirname(os.path.abspath(url.database))
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
        try:
            self.engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"cannot open {url.render_as_string(hide_password=True)}: {exc}") from None
        if url.get_backend_name() == "sqlite":
            # WAL: a nightly ingest does not block readers of the history
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.dialect = url.get_backend_name()
        try:
            self._migrate(upto)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot use {url.render_as_string(hide_password=True)}: "
                             f"{str(exc.orig).strip().splitlines()[0]}") from None

    def _migrate(self, upto: int) -> None:
        with self.engine.begin() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table("schema_version"):
                schema_version.create(conn)
            version = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"database schema version {version} is newer than this harness "
                                 f"understands ({SCHEMA_VERSION}): update the harness")
            for target in range(version + 1, upto + 1):
                MIGRATIONS[target](conn)
                conn.execute(schema_version.insert().values(version=target, applied=_utc_now()))
        self.version = max(version, upto)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()

    def ingest(self, recs: list[dict]) -> IngestResult:
        """Add records not yet present (by content hash), all in one transaction."""
        added, present = [], []
        now = _utc_now()
        with self.engine.begin() as conn:
            for rec in recs:
                h = content_hash(rec)
                if h in added or conn.execute(sa.select(records.c.id).where(
                        records.c.content_hash == h)).first():
                    present.append(h)
                    continue
                conn.execute(records.insert().values(**self._row(rec, h, now)))
                added.append(h)
        return IngestResult(added, present)

    def _row(self, rec: dict, h: str, now: str) -> dict:
        m, cfg, harness = rec["machine"], rec["config"], rec["harness"]
        created = datetime.datetime.fromisoformat(rec["created"]).astimezone(datetime.timezone.utc)
        row = dict(content_hash=h, created=created.isoformat(timespec="seconds"),
                   night=created.date().isoformat(), ingested=now,
                   hostname=m.get("hostname"), boot_id=m.get("boot_id"),
                   kernel_release=m.get("kernel_release"), cpu_model=m.get("cpu_model"),
                   harness_commit=harness.get("git_commit"), harness_dirty=harness.get("git_dirty"),
                   config_hash=content_hash(cfg), cell_key=cell_key(cfg), cell_name=cell_name(cfg),
                   mech=cfg.get("mech"), workload=cfg.get("workload"), vcpus=cfg.get("vcpus"),
                   emulated=bool(rec["emulated"]), runs=len(rec["runs"]),
                   config_json=canonical(cell_config(cfg)), record_json=canonical(rec))
        if self.version >= 2:
            fp = m.get("fingerprint")
            row["fingerprint_json"] = canonical(fp) if fp else None
        return row

    def rows(self, cells: list[str] | None = None, hostname: str | None = None) -> list[dict]:
        """Every stored record's indexed columns plus the record, oldest first."""
        q = sa.select(records).order_by(records.c.created, records.c.id)
        if cells:
            q = q.where(sa.or_(records.c.cell_key.in_(cells), records.c.cell_name.in_(cells)))
        if hostname:
            q = q.where(records.c.hostname == hostname)
        with self.engine.connect() as conn:
            out = []
            for row in conn.execute(q).mappings():
                d = dict(row)
                d["record"] = json.loads(d.pop("record_json"))
                out.append(d)
            return out

    def dump(self) -> list[dict]:
        """Everything but the database's own ids and ingest times: for comparing stores."""
        return [{k: v for k, v in r.items() if k not in ("id", "ingested")} for r in self.rows()]

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
