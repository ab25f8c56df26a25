"""Database access: the URL (external or embedded), engines, migrations, the data version.

Every command that needs the database calls :func:`database_url`, which starts the embedded
cluster on demand when no ``DATABASE_URL`` is set.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.embedded import EmbeddedCluster, cluster_home
from app.settings import PROJECT_ROOT, Settings, get_settings


def embedded_cluster(settings: Settings | None = None) -> EmbeddedCluster:
    s = settings or get_settings()
    return EmbeddedCluster(cluster_home(s.cluster_dir), port=s.db_port, db_name=s.db_name, db_user=s.db_user,
                           bindir=s.pg_bindir)


def database_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL to use, starting the embedded cluster if that is the database."""
    s = settings or get_settings()
    if s.database_url:
        url = s.database_url
        # Accept the plain libpq form that PaaS and docker-compose hand out.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        return url
    return embedded_cluster(s).ensure_running()


def make_engine(url: str, *, pool_size: int = 8, statement_timeout_ms: int | None = None) -> sa.Engine:
    connect_args = {}
    if statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            connect_args=connect_args)


@lru_cache(maxsize=8)
def _cached_engine(url: str) -> sa.Engine:
    return make_engine(url)


def engine(settings: Settings | None = None) -> sa.Engine:
    """A pooled engine for CLI work (no statement timeout: imports and runs take long)."""
    return _cached_engine(database_url(settings))


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(url: str) -> None:
    """Migrate to head if the database is behind (idempotent, cheap when current)."""
    eng = _cached_engine(url)
    with eng.connect() as conn:
        current = current_revision(conn)
    if current != head_revision():
        upgrade(url)


def bump_data_version(conn: sa.Connection) -> int:
    """Mark that data changed: ETags and cached counts of the API key on this number."""
    return conn.execute(sa.text(
        "INSERT INTO data_version (id, version, changed_at) VALUES (1, 1, now()) "
        "ON CONFLICT (id) DO UPDATE SET version = data_version.version + 1, changed_at = now() "
        "RETURNING version"
    )).scalar_one()


def audit(conn: sa.Connection, actor: str, action: str, entity: str | None = None,
          entity_id: str | None = None, details: dict | None = None) -> None:
    from app.models import audit_log

    conn.execute(audit_log.insert().values(actor=actor, action=action, entity=entity,
                                           entity_id=entity_id, details=details or {}))
