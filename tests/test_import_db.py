"""``mujun import`` against a real PostGIS: atomic loads, rejected rows kept, re-import a no-op."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.ingest import import_bundle
from spatial.io import BundleError
from tests.bundle_factory import parcel_code, uscc, write_bundle

DATA_TABLES = ("parcels", "enterprises", "metrics", "leases", "buildings", "link_corrections")


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in DATA_TABLES}


def _checksum(engine) -> dict[str, str]:
    """Content of every data table, updated_at included: a no-op leaves it byte-identical."""
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                        f"FROM {t} x")).scalar_one() for t in DATA_TABLES}


def test_import_lands_valid_rows_and_keeps_rejects(engine, tmp_path, settings):
    bundle = write_bundle(tmp_path / "b", metrics_extra=[
        {"统一社会信用代码": uscc(1), "年度": 2023, "实缴税金": -5.0},                 # negative tax
        {"统一社会信用代码": uscc(99), "年度": 2024, "实缴税金": 10.0},                # unknown enterprise
    ], enterprises_extra=[
        {"统一社会信用代码": "9133099912345", "企业名称": "坏代码有限公司", "经度": 120.1, "纬度": 30.2},  # bad length
    ])
    report = import_bundle(engine, bundle, settings=settings)
    assert report.status == "loaded"
    assert report.counts["parcels"]["inserted"] == 6
    assert report.counts["enterprises"]["inserted"] == 7
    assert report.counts["metrics"]["inserted"] == 14
    with engine.connect() as conn:
        rejects = conn.execute(sa.text(
            "SELECT file, row, field, reason FROM import_rejects WHERE severity = 'error' ORDER BY file, row")).all()
        areas = dict(conn.execute(sa.text("SELECT parcel_code, area_m2 FROM parcels")).all())
        srid = conn.execute(sa.text("SELECT DISTINCT ST_SRID(geom) FROM parcels")).scalar_one()
    assert srid == 4490
    # Areas computed in the Gauss-Krüger zone: 100 m × 60 m.
    assert areas[parcel_code(1)] == pytest.approx(6000.0, abs=0.5)
    files = {(r.file, r.field) for r in rejects}
    assert ("enterprises.csv", "uscc") in files
    assert ("metrics.csv", "tax_paid") in files
    assert ("metrics.csv", "uscc") in files
    # Row numbers are what a person sees in Excel: header is line 1.
    bad_ent = [r for r in rejects if r.file == "enterprises.csv"][0]
    assert bad_ent.row == 9
    assert report.errors == 3
    assert "Rejected rows: 3" in report.report_path.read_text(encoding="utf-8")


def test_reimport_changes_nothing(engine, tmp_path, settings):
    bundle = write_bundle(tmp_path / "b")
    import_bundle(engine, bundle, settings=settings)
    before = _checksum(engine)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM data_version")).scalar_one()
    again = import_bundle(engine, bundle, settings=settings)
    assert all(c["inserted"] == 0 and c["updated"] == 0 for k, c in again.counts.items() if k != "rejects")
    assert _checksum(engine) == before
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM data_version")).scalar_one() == version
        assert conn.execute(sa.text("SELECT count(*) FROM import_batches WHERE status = 'loaded'")).scalar_one() == 2


def test_changed_row_is_updated_not_duplicated(engine, tmp_path, settings):
    import_bundle(engine, write_bundle(tmp_path / "a"), settings=settings)
    b = write_bundle(tmp_path / "b")
    text = (b / "enterprises.csv").read_text(encoding="utf-8-sig").replace("测试企业2有限公司", "测试企业2股份有限公司")
    (b / "enterprises.csv").write_text(text, encoding="utf-8-sig")
    report = import_bundle(engine, b, settings=settings)
    assert report.counts["enterprises"] == {"inserted": 0, "updated": 1, "unchanged": 6}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM enterprises WHERE uscc = :u"), {"u": uscc(2)}).scalar_one() \
            == "测试企业2股份有限公司"


def test_missing_required_column_refuses_everything(engine, tmp_path, settings):
    bundle = write_bundle(tmp_path / "b", drop_enterprise_column="统一社会信用代码")
    with pytest.raises(BundleError) as err:
        import_bundle(engine, bundle, settings=settings)
    assert "enterprises.csv" in str(err.value) and "uscc" in str(err.value)
    assert _counts(engine) == dict.fromkeys(DATA_TABLES, 0)
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM import_batches")).scalars().all()
    assert status == ["refused"]


def test_failure_midway_lands_nothing(engine, tmp_path, settings):
    """A database error while loading metrics (after enterprises and parcels were written in the
    same transaction) must leave no trace of the bundle: all or nothing."""
    with engine.begin() as conn:
        conn.execute(sa.text("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'metrics table is read-only in this test'; END $$;
            CREATE TRIGGER refuse_metrics BEFORE INSERT ON metrics FOR EACH ROW EXECUTE FUNCTION refuse();"""))
    with pytest.raises(sa.exc.DBAPIError, match="read-only in this test"):
        import_bundle(engine, write_bundle(tmp_path / "b"), settings=settings)
    assert _counts(engine) == dict.fromkeys(DATA_TABLES, 0)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM import_rejects")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM import_batches WHERE status = 'loaded'")).scalar_one() == 0


@pytest.fixture
def fresh_engines(_template, pg_admin_url):
    """Make a fresh migrated database per hypothesis example (a function fixture would be shared)."""
    import uuid

    from tests.conftest import TEMPLATE, _with_db

    made = []

    def make():
        name = f"mujun_h_{uuid.uuid4().hex[:10]}"
        with _template.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
        eng = sa.create_engine(_with_db(pg_admin_url, name))
        made.append((name, eng))
        return eng

    yield make
    for name, eng in made:
        eng.dispose()
        with _template.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _shuffle_rows(path, perm_seed: int) -> None:
    import pandas as pd

    df = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
    df.sample(frac=1.0, random_state=perm_seed).to_csv(path, index=False, encoding="utf-8-sig")


from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(perm=st.integers(0, 10_000), reversed_parcels=st.booleans())
def test_property_reimport_in_any_row_order_is_a_no_op(fresh_engines, tmp_path_factory, perm, reversed_parcels):
    """Whatever order a county's files list their rows in, importing the same content again
    changes nothing: no row inserted or updated, identical table contents, same identity codes."""
    import geopandas as gpd

    from app.settings import Settings

    root = tmp_path_factory.mktemp("prop")
    engine = fresh_engines()
    s = Settings(data_dir=root / "var", database_url="postgresql://unused")
    import_bundle(engine, write_bundle(root / "a"), settings=s)
    before = _checksum(engine)
    again = write_bundle(root / "b")
    for name in ("enterprises.csv", "metrics.csv"):
        _shuffle_rows(again / name, perm)
    if reversed_parcels:
        p = gpd.read_file(again / "parcels.geojson")
        p.iloc[::-1].to_file(again / "parcels.geojson", driver="GeoJSON")
    report = import_bundle(engine, again, settings=s)
    assert all(c["inserted"] == 0 and c["updated"] == 0 for k, c in report.counts.items() if k != "rejects")
    assert _checksum(engine) == before
