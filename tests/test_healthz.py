"""/healthz against a real embedded PostGIS, including an outage and recovery."""

import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import sqlalchemy as sa

from app.auth import create_key
from app.embedded import EmbeddedCluster
from app.main import create_app


def test_healthz_reports_postgis_and_schema(db_url):
    with TestClient(create_app(database_url=db_url)) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "database": "up", "pool": "ok"}  # details only for admins
        with sa.create_engine(db_url).begin() as conn:
            admin = create_key(conn, "hz", "admin")
        r = client.get("/healthz", headers={"X-API-Key": admin})
        body = r.json()
        assert body["database"] == "up"
        assert body["postgis"].startswith("3.")
        assert body["schema_revision"] == body["schema_head"]


@pytest.fixture
def own_cluster():
    # Its own cluster: stopping it must not disturb the other tests' server.
    cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="mujun-hz-")), durable=False)
    cluster.ensure_running()
    yield cluster
    cluster.destroy()


def test_healthz_goes_503_when_database_stops_and_recovers(own_cluster):
    with TestClient(create_app(database_url=own_cluster.url())) as client:
        assert client.get("/healthz").status_code == 200
        own_cluster.stop()
        down = client.get("/healthz")
        assert down.status_code == 503
        assert down.json()["database"] == "down"
        assert "mujun db start" in down.json()["hint"]
        # no driver error, host or port for anonymous callers (issue 12)
        assert "error" not in down.json() and str(own_cluster.port) not in down.text
        assert down.headers["retry-after"]
        own_cluster.start()
        up = client.get("/healthz")
        assert up.status_code == 200, up.text
        assert up.json()["database"] == "up"
