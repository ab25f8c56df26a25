"""Test fixtures: a real PostGIS, never a mock.

With ``DATABASE_URL`` set, tests create their databases on that server (the role needs
CREATEDB). Otherwise one throwaway embedded cluster is started for the session. Each test that
asks for ``db_url`` gets a fresh database cloned from a migrated template (a file copy: fast).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import db
from app.embedded import EmbeddedCluster

REPO = Path(__file__).resolve().parents[1]
# Publishing and importing render tiles and features at once (app.render): off for the suite,
# where most tests publish small fixtures; tests/test_render.py turns it on and covers it.
os.environ.setdefault("MUJUN_RENDER_AT_PUBLISH", "0")
REAL_DATA = REPO.parent / "shared" / "data" / "real"
ARTIFACTS = REPO / "tests" / "_artifacts"
TEMPLATE = "mujun_test_template"


def _with_db(url: str, name: str) -> str:
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False))


@pytest.fixture(scope="session")
def pg_admin_url():
    """URL of a maintenance database on the test server (embedded, throwaway, unless DATABASE_URL)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        url = db.database_url()
        yield _with_db(url, "postgres")
        return
    cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="mujun-test-")), durable=False)
    cluster.ensure_running()
    yield _with_db(cluster.url(), "postgres")
    cluster.destroy()


@pytest.fixture(scope="session")
def _template(pg_admin_url):
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{TEMPLATE}"'))
    url = _with_db(pg_admin_url, TEMPLATE)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    eng.dispose()
    db.upgrade(url)
    yield admin
    admin.dispose()


@pytest.fixture
def db_url(_template, pg_admin_url):
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"mujun_t_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = _with_db(pg_admin_url, name)
    yield url
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def engine(db_url):
    """An engine on the test's fresh database."""
    eng = sa.create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(tmp_path):
    """Settings whose reports go to the test's own directory (the engine is passed explicitly)."""
    from app.settings import Settings

    return Settings(data_dir=tmp_path / "var", database_url="postgresql://unused")


@pytest.fixture
def empty_db_url(pg_admin_url):
    """A fresh database with PostGIS but no schema (for migration tests)."""
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"mujun_e_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = _with_db(pg_admin_url, name)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests save what a person may want to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def county_bundle(tmp_path_factory) -> Path:
    """The sample county (seed 42, 2,000 parcels) written as a county delivers it."""
    from app.sample import write_sample_bundle

    out = tmp_path_factory.mktemp("county") / "bundle"
    write_sample_bundle(out, seed=42, parcels=2000, fmt="county")
    return out


def load_county(eng, bundle, settings) -> list[int]:
    """Import ``bundle``, match, and evaluate every year of its metrics (zhejiang_default, each
    run published): the sample county as a bureau has it after a year's cycle. Returns the years."""
    from app.evaluation import evaluate_year
    from app.ingest import import_bundle
    from app.pipeline import run_matching

    import_bundle(eng, bundle, settings=settings)
    run_matching(eng, settings=settings)
    with eng.connect() as conn:
        years = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT year FROM metrics ORDER BY year"))]
    for year in years:
        evaluate_year(eng, year, "zhejiang_default", publish=True)
    return years


@pytest.fixture(scope="session")
def county_db_url(_template, pg_admin_url, county_bundle, tmp_path_factory) -> str:
    """A database with the sample county imported, matched and evaluated for every year
    (zhejiang_default, each run published). Shared by the session: tests must only read it."""
    from app.settings import Settings

    name = "mujun_county"
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    url = _with_db(pg_admin_url, name)
    settings = Settings(data_dir=tmp_path_factory.mktemp("county_var"), database_url=url)
    eng = sa.create_engine(url)
    load_county(eng, county_bundle, settings)
    eng.dispose()
    yield url
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
