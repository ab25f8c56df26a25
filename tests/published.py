"""The sample county as a published run behind the API, for the tests of what bureaus publish."""
from __future__ import annotations

from contextlib import contextmanager

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth import create_key
from app.main import create_app
from app.settings import Settings


@contextmanager
def published_county(db_url: str, data_dir, keys: dict[str, tuple[str, bool]]):
    """(engine, year, run id, the largest township, API keys by name, TestClient) of the newest
    published run; ``keys`` maps a key's name to (role, limited to that township?)."""
    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        year = conn.execute(sa.text("SELECT max(year) FROM evaluation_runs WHERE status = 'published'")).scalar_one()
        run = conn.execute(sa.text("SELECT id FROM evaluation_runs WHERE year = :y AND status = 'published'"),
                           {"y": year}).scalar_one()
        town = conn.execute(sa.text("SELECT township FROM parcels GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")).scalar_one()
        made = {name: create_key(conn, f"{data_dir.name}-{name}", role, town if in_town else None)
                for name, (role, in_town) in keys.items()}
    app = create_app(Settings(data_dir=data_dir), database_url=db_url)
    try:
        with TestClient(app) as client:
            yield eng, year, run, town, made, client
    finally:
        eng.dispose()
