"""The inputs of ../shared/cases that mujun got wrong (issue 11), each giving the right value.

Bundles go through ``mujun import / match / evaluate / explain`` as real processes on a real
PostGIS; the folders that hold only a ``metrics.csv`` are "a metrics table for the pure scoring
API" (cases/README.md) and go through :func:`scoring.evaluate`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from scoring import evaluate, explain_text, load_scheme
from tests.conftest import _with_db
from tests.test_cli import _mujun

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"

pytestmark = pytest.mark.skipif(not CASES.is_dir(), reason="../shared/cases is not checked out next to the repo")


def _metrics(case: str) -> pd.DataFrame:
    return pd.read_csv(CASES / case / "metrics.csv", dtype={"subject_id": str, "industry_code": str})


def _bundle(case: str, tmp_path: Path, name: str = "bundle") -> Path:
    dst = tmp_path / name
    shutil.copytree(CASES / case, dst)
    return dst


def _run(db_url: str, bundle: Path, tmp_path: Path, *, year: int | None = None, scheme: str | None = None,
         import_codes: tuple[int, ...] = (0,)):
    """import → match (→ evaluate): each step must succeed (import: exit 3 = loaded with rejected
    rows listed, when allowed); returns the import's completed process."""
    imported = _mujun(db_url, "import", str(bundle), data_dir=tmp_path)
    assert imported.returncode in import_codes, imported.stdout + imported.stderr
    matched = _mujun(db_url, "match", data_dir=tmp_path)
    assert matched.returncode == 0, matched.stdout + matched.stderr
    if year is None:
        return imported
    args = ["evaluate", "--year", str(year), "--publish"] + (["--scheme", scheme] if scheme else [])
    evaluated = _mujun(db_url, *args, data_dir=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    return imported


def _links(db_url: str) -> pd.DataFrame:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as conn:
            return pd.read_sql(sa.text(
                "SELECT l.uscc, p.parcel_code, l.role, l.method, l.share, l.attributed_area_m2, p.area_m2 "
                "FROM land_links l JOIN parcels p USING (identity_code) ORDER BY l.uscc, p.parcel_code"), conn)
    finally:
        eng.dispose()


def _ratings(db_url: str) -> pd.DataFrame:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as conn:
            return pd.read_sql(sa.text(
                "SELECT uscc, grade, evaluated, excluded_reason, explanation FROM enterprise_ratings "
                "WHERE run_id = (SELECT max(id) FROM evaluation_runs) ORDER BY uscc"), conn).set_index("uscc")
    finally:
        eng.dispose()


def _archive(db_url: str, uscc: str, path: str | None = None) -> dict:
    """GET /enterprises/{uscc} (一企一档), or ``path``, as an analyst, through the real app."""
    from fastapi.testclient import TestClient

    from app.auth import create_key
    from app.main import create_app

    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        key = create_key(conn, "cases", "analyst")
    eng.dispose()
    with TestClient(create_app(database_url=db_url)) as client:
        r = client.get(path or f"/enterprises/{uscc}", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def second_db_url(_template, pg_admin_url):
    """A second fresh, migrated database in the same test (for a 'without it' comparison)."""
    name = f"mujun_t_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "mujun_test_template"'))
    yield _with_db(pg_admin_url, name)
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------- scoring API cases


def test_yongkang_d_floor_exactly_6():
    """38.4 万元 on 6.4 亩 is 亩均税收 6.00, not below 6: the D candidate falls back to C."""
    m = _metrics("yongkang-d-floor-exactly-6")
    assert m.loc[0, "tax_paid"] / m.loc[0, "land_area_mu"] < 6  # the float noise the case is about
    out = evaluate(m, load_scheme("yongkang"), 2024)
    row = out.iloc[0]
    assert row["percentile"] == 100.0                      # a D candidate (末 2 %)
    assert (row["band_grade"], row["grade"]) == ("C", "C")
    note = row["explanation"]["band_note"]
    assert note == "D档附加条件（tax_per_mu < 6）不满足（比较值：亩均税收 6.00 万元/亩），改入C档"
    assert "改入C档" in explain_text(row["explanation"])


def test_landless_enterprise_is_not_ranked_among_landed():
    m = _metrics("landless-enterprise")
    scheme = load_scheme("huangyan_2022")
    out = evaluate(m, scheme, 2022).set_index("subject_id")
    landless = "91330681YKLMED6L98"
    assert not out.loc[landless, "evaluated"] and pd.isna(out.loc[landless, "grade"])
    assert pd.isna(out.loc[landless, "rank"])
    reason = out.loc[landless, "excluded_reason"]
    assert reason == "无地企业（用地 0.00 亩，不足 0.01 亩）：不计亩均指标，不参与有地企业排名"
    assert reason in explain_text(out.loc[landless, "explanation"])
    # the four landed get the grades (and ranks, scores) they get without it
    alone = evaluate(m[m["subject_id"] != landless], scheme, 2022).set_index("subject_id")
    landed = out.drop(index=landless)
    assert landed["grade"].tolist() == alone["grade"].tolist()
    assert landed["rank"].tolist() == alone["rank"].tolist() and landed["rank_n"].unique().tolist() == [4]
    pd.testing.assert_series_equal(landed["score"], alone["score"])


# --------------------------------------------------------------------------- bundle cases (PostGIS)


@pytest.mark.parametrize("ring", ["as delivered", "sliver 2 m²"])
def test_zero_area_parcel_changes_nobody_elses_grade(ring, db_url, second_db_url, tmp_path):
    bundle = _bundle("zero-area-parcel", tmp_path)
    if ring == "sliver 2 m²":
        # a ring that is not degenerate but far below 0.01 亩 (2 m² = 0.003 亩): if the importer
        # keeps it, the scoring must still not divide by it
        gj = json.loads((bundle / "parcels.geojson").read_text("utf-8"))
        x, y = 510410.0, 3341300.0
        gj["features"][5]["geometry"]["coordinates"] = [[[x, y], [x + 2, y], [x + 2, y + 1], [x, y + 1], [x, y]]]
        (bundle / "parcels.geojson").write_text(json.dumps(gj, ensure_ascii=False), "utf-8")
    imported = _run(db_url, bundle, tmp_path / "a", year=2024, import_codes=(0, 3))
    if imported.returncode == 3:  # rejected at import (spatial.validate): it must say which and why
        assert "parcels.geojson 第 6 行 [geometry]" in imported.stdout
    got = _ratings(db_url)
    # the same bundle without the degenerate parcel
    clean = _bundle("zero-area-parcel", tmp_path, "clean")
    gj = json.loads((clean / "parcels.geojson").read_text("utf-8"))
    gj["features"] = [f for f in gj["features"] if f["properties"]["宗地代码"] != "330999001001GB00006"]
    (clean / "parcels.geojson").write_text(json.dumps(gj, ensure_ascii=False), "utf-8")
    _run(second_db_url, clean, tmp_path / "b", year=2024)
    want = _ratings(second_db_url)
    five = [f"91330999MA0000{k}" for k in ("0016", "0029", "003C", "004F", "005J")]
    assert got.loc[five, "grade"].tolist() == want.loc[five, "grade"].tolist()
    assert got.loc[five, "evaluated"].all()
    # the owner of the degenerate ring has no land that counts: never rated on 10¹² 万元/亩
    sixth = "91330999MA0000006M"
    assert not got.loc[sixth, "evaluated"] and pd.isna(got.loc[sixth, "grade"])
    assert got.loc[sixth, "excluded_reason"].startswith("无地企业（用地 0.00 亩")
    explained = _mujun(db_url, "explain", sixth, data_dir=tmp_path / "a")
    assert explained.returncode == 0, explained.stderr
    assert "未参评，无地企业（用地 0.00 亩，不足 0.01 亩）" in explained.stdout
    # 一企一档 shows why, too
    archive = _archive(db_url, sixth)
    last = archive["ratings"][-1]
    assert last["evaluated"] is False and last["excluded_reason"].startswith("无地企业（用地 0.00 亩")
    assert "无地企业" in last["explanation_text"]
    # no parcel is rated on a per-mu value of land that is not there
    eng = sa.create_engine(db_url)
    with eng.connect() as conn:
        rated = conn.execute(sa.text(
            "SELECT r.tax_per_mu, p.area_mu FROM parcel_ratings r JOIN parcels p USING (identity_code) "
            "WHERE r.run_id = (SELECT max(id) FROM evaluation_runs) AND r.evaluated")).all()
        flagged = conn.execute(sa.text(
            "SELECT r.excluded_reason, r.tax_per_mu FROM parcel_ratings r JOIN parcels p USING (identity_code) "
            "WHERE p.parcel_code = '330999001001GB00006' "
            "AND r.run_id = (SELECT max(id) FROM evaluation_runs)")).all()
    eng.dispose()
    assert rated and all(area >= 0.01 and tpm < 1e3 for tpm, area in rated)
    # imported (then flagged as 无地 when rated) or rejected at import: either way never rated,
    # and no 亩均税收 is stored for it (maps, clusters and 低产田 read the stored figure)
    assert all(reason.startswith("宗地面积过小（0.00 亩，不足 0.01 亩）") and tpm is None for reason, tpm in flagged)
    if imported.returncode == 0:  # kept at import: then it is rated as 无地, with the reason
        assert len(flagged) == 1
        explained = _mujun(db_url, "explain", "330999001001GB00006", data_dir=tmp_path / "a")
        assert explained.returncode == 0, explained.stderr
        assert "未参评，宗地面积过小（0.00 亩，不足 0.01 亩）" in explained.stdout
        parcel = _archive(db_url, "", "/parcels/R-330999001001GB00006")   # 一地一档
        assert parcel["ratings"][-1]["excluded_reason"].startswith("宗地面积过小")


def test_owner_point_on_shared_corner(db_url, tmp_path):
    _run(db_url, _bundle("owner-point-on-shared-corner", tmp_path), tmp_path)
    links = _links(db_url)
    a, b = "91330681070A1BCDER", "91330681070B2BCDE4"
    la, lb = links[links["uscc"] == a], links[links["uscc"] == b]
    # A (its point on the corner it shares with B) is linked to its own parcel only
    assert la["parcel_code"].tolist() == ["330681070001GB00701"]
    assert la["role"].tolist() == ["owner_occupier"] and la["share"].tolist() == [1.0]
    # B keeps all of its parcel
    assert lb["parcel_code"].tolist() == ["330681070002GB00702"] and lb["share"].tolist() == [1.0]
    assert (links["role"] != "tenant").all()


def test_building_straddles_two_parcels(db_url, tmp_path):
    _run(db_url, _bundle("building-straddles-two-parcels", tmp_path), tmp_path)
    links = _links(db_url)
    owner_a, owner_b, tenant = "91330681071A1BCDE0", "91330681071B2BCDEA", "91330681071C3BCDEL"
    t = links[links["uscc"] == tenant]
    # the tenant is on P-B, the parcel under its point — not on P-A, which the building overlaps most
    assert t["parcel_code"].tolist() == ["330681071002GB00712"]
    assert t["role"].tolist() == ["tenant"] and t["method"].tolist() == ["building"]
    # P-A's owner keeps all of P-A
    pa = links[links["parcel_code"] == "330681071001GB00711"]
    assert pa["uscc"].tolist() == [owner_a] and pa["share"].tolist() == [1.0]
    # on P-B the tenant claims only the building's part there (20 m × 60 m of 100 m × 100 m)
    pb = links[links["parcel_code"] == "330681071002GB00712"].set_index("uscc")
    assert pb.loc[tenant, "share"] == pytest.approx(1200 / pb.loc[tenant, "area_m2"], rel=1e-3)
    assert pb.loc[owner_b, "share"] == pytest.approx(1 - pb.loc[tenant, "share"])
