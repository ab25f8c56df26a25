"""A county's land over the years (issue 10), on a real PostGIS.

A county near the 121.5°E Gauss-Krüger zone edge is delivered for 2024; its 2025 delivery is
derived from it with every vertex moved by up to 2 cm, extra collinear vertices, rows shuffled, one
parcel split in two, two merged, one retired, one new de-facto piece, one 宗地代码 re-issued and a
new parcel in the east, so that the 2025 parcels alone fall in the next zone (EPSG:4550).
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pyproj import Transformer
from shapely.geometry import box

from app.evaluation import evaluate_year
from app.ingest import DeliveryRefused, import_bundle
from app.land_diff import land_diff, write_diff
from app.pipeline import run_matching
from spatial.crs import metric_crs_for
from spatial.identifiers import make_uscc
from spatial.identity import build_land
from spatial.lineage import reconcile

COUNTY = "330999"
GK = 4549  # CGCS2000 GK zone 120°E: where the 2024 land falls
X0, Y0 = Transformer.from_crs(4490, GK, always_xy=True).transform(121.47, 30.2)
W, H, ROAD = 100.0, 60.0, 20.0


def pcode(i: int) -> str:
    return f"{COUNTY}001001GB{i:05d}"


def uscc(i: int) -> str:
    return make_uscc(f"91330999MA{i:07d}")


def cell(i: int):
    """Parcel i (1..12): a 4 × 3 grid of 100 m × 60 m parcels with 20 m roads."""
    r, c = divmod(i - 1, 4)
    x, y = X0 + c * (W + ROAD), Y0 + r * (H + ROAD)
    return box(x, y, x + W, y + H)


def county_2024() -> dict:
    parcels = [{"宗地代码": pcode(i), "权利人统一社会信用代码": uscc(i), "权利人": f"企业{i}有限公司",
                "用途": "工业用地", "镇街": "东港街道", "geometry": cell(i)} for i in range(1, 13)]
    p6 = cell(6)
    defacto = [  # a strip used by parcel 6's owner (attached) and two independent pieces south
        {"使用企业统一社会信用代码": uscc(6), "备注": "围墙外堆场", "geometry": box(p6.bounds[2], p6.bounds[1],
                                                                       p6.bounds[2] + 8, p6.bounds[3])},
        {"使用企业统一社会信用代码": uscc(9), "备注": "临时仓库", "geometry": box(X0, Y0 - 70, X0 + 50, Y0 - 30)},
        {"使用企业统一社会信用代码": None, "备注": "空地", "geometry": box(X0 + 200, Y0 - 70, X0 + 260, Y0 - 30)},
    ]
    return {"parcels": parcels, "defacto": defacto}


def county_2025() -> dict:
    """The 2025 delivery: the edits listed in the module docstring (before noise)."""
    base = county_2024()
    parcels = {p["宗地代码"]: dict(p) for p in base["parcels"]}
    p1 = cell(1)
    x0, y0, x1, y1 = p1.bounds
    left, right = box(x0, y0, x0 + 40, y1), box(x0 + 40, y0, x1, y1)
    del parcels[pcode(1)]  # split: the west 40 m sold to a newcomer, both parts re-registered
    parcels[pcode(101)] = {**base["parcels"][0], "宗地代码": pcode(101), "权利人统一社会信用代码": uscc(50),
                           "权利人": "新来企业有限公司", "geometry": left}
    parcels[pcode(102)] = {**base["parcels"][0], "宗地代码": pcode(102), "geometry": right}
    merged = shapely.union_all([cell(2), cell(3), box(cell(2).bounds[2], cell(2).bounds[1],
                                                      cell(3).bounds[0], cell(2).bounds[3])])
    del parcels[pcode(2)], parcels[pcode(3)]  # merged, with the road between them
    parcels[pcode(103)] = {**base["parcels"][1], "宗地代码": pcode(103), "geometry": merged}
    del parcels[pcode(4)]  # retired
    recoded = parcels.pop(pcode(5))  # the same land, a re-issued 宗地代码
    parcels[pcode(105)] = {**recoded, "宗地代码": pcode(105)}
    east = Transformer.from_crs(4490, GK, always_xy=True).transform(121.545, 30.2)
    parcels[pcode(200)] = {**base["parcels"][0], "宗地代码": pcode(200), "权利人统一社会信用代码": uscc(60),
                           "权利人": "东区企业有限公司", "geometry": box(east[0], east[1], east[0] + 80, east[1] + 50)}
    defacto = base["defacto"] + [{"使用企业统一社会信用代码": None, "备注": "新发现",
                                  "geometry": box(X0 + 320, Y0 - 70, X0 + 350, Y0 - 40)}]
    return {"parcels": list(parcels.values()), "defacto": defacto}


def _noisy(geoms, rng) -> list:
    """Every vertex moved by up to 2 cm (1.4 cm per axis), a collinear vertex added on every edge."""
    out = []
    for g in geoms:
        polys = shapely.get_parts(g)
        rings = []
        for poly in polys:
            c = np.asarray(poly.exterior.coords)[:-1]
            mid = (c + np.roll(c, -1, axis=0)) / 2  # collinear midpoints
            dense = np.empty((2 * len(c), 2))
            dense[0::2], dense[1::2] = c, mid
            dense += rng.uniform(-0.014, 0.014, size=dense.shape)
            rings.append(shapely.Polygon(dense))
        out.append(rings[0] if len(rings) == 1 else shapely.MultiPolygon(rings))
    return out


def write_delivery(root, layers: dict, *, noise_seed: int | None = None, shuffle_seed: int | None = None,
                   manifest: dict | None = None, corrections: bool = True):
    """Parcels and de-facto land as GeoPackages in EPSG:4490; enterprises at parcel centres of the
    2024 grid; metrics for 2024 and 2025."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(noise_seed or 0)
    for name, rows in layers.items():
        if not rows:
            continue
        df = gpd.GeoDataFrame(rows, geometry="geometry", crs=GK)
        if noise_seed is not None:
            df = df.set_geometry(gpd.GeoSeries(_noisy(df.geometry, rng), index=df.index, crs=GK))
        if shuffle_seed is not None:
            df = df.sample(frac=1.0, random_state=shuffle_seed)
        df.to_crs(4490).to_file(root / f"{name}.gpkg", driver="GPKG")
    pts = gpd.GeoSeries([cell(i).centroid for i in range(1, 13)], crs=GK).to_crs(4490)
    ents = pd.DataFrame({"统一社会信用代码": [uscc(i) for i in range(1, 13)],
                         "企业名称": [f"企业{i}有限公司" for i in range(1, 13)],
                         "经度": pts.x.round(8), "纬度": pts.y.round(8), "坐标系": "cgcs2000",
                         "行业代码": ["3311", "2611", "3412", "1713"] * 3, "规模": "规上", "镇街": "东港街道"})
    ents.to_csv(root / "enterprises.csv", index=False, encoding="utf-8-sig")
    rows = [{"统一社会信用代码": uscc(i), "年度": y, "实缴税金": 20.0 + 7 * i + (y - 2024) * 3, "税收还原额": 1.0,
             "工业增加值": 300.0 + 25 * i, "营业收入": 2000.0 + 90 * i, "综合能耗": 80.0 + i, "排放当量": 1.0,
             "研发经费": 40.0 + i, "从业人员": 30 + i, "用电量": 800_000 + 900 * i}
            for y in (2024, 2025) for i in range(1, 13)]
    pd.DataFrame(rows).to_csv(root / "metrics.csv", index=False, encoding="utf-8-sig")
    if corrections:
        # 纠偏 naming land that is merged (one heir) and split (two heirs) in 2025
        pd.DataFrame({"统一社会信用代码": [uscc(12), uscc(11)], "宗地代码": [pcode(3), pcode(1)],
                      "操作": ["add", "add"], "原因": ["实地核实", "实地核实"]}).to_csv(
            root / "corrections.csv", index=False, encoding="utf-8-sig")
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def _land(engine, year):
    with engine.connect() as conn:
        from app.api.layers import land_in_year_sql
        return pd.DataFrame(conn.execute(sa.text(
            f"SELECT identity_code, version_id, valid_from, kind, parcel_code, area_m2, area_mu "
            f"FROM {land_in_year_sql()} p ORDER BY identity_code"), {"year": year}).mappings().all())


def _ratings(engine, run_id):
    with engine.connect() as conn:
        ent = conn.execute(sa.text("SELECT uscc, grade, score, tax_per_mu, land_area_mu FROM enterprise_ratings "
                                   "WHERE run_id = :r ORDER BY uscc"), {"r": run_id}).all()
        par = conn.execute(sa.text("SELECT identity_code, grade, score, tax_per_mu, idle FROM parcel_ratings "
                                   "WHERE run_id = :r ORDER BY identity_code"), {"r": run_id}).all()
    return [tuple(r) for r in ent], [tuple(r) for r in par]


@pytest.fixture
def two_years(engine, tmp_path, settings):
    """2024 imported, matched, evaluated; then the 2025 delivery imported and matched again."""
    d24 = write_delivery(tmp_path / "2024", county_2024(), manifest={"year": 2024})
    d25 = write_delivery(tmp_path / "2025", county_2025(), noise_seed=7, shuffle_seed=3)
    import_bundle(engine, d24, settings=settings)
    run_matching(engine, settings=settings)
    before = evaluate_year(engine, 2024, "zhejiang_default", publish=True)
    land24 = _land(engine, 2024)
    report = import_bundle(engine, d25, settings=settings, year=2025)
    # the 2025 land is not matched yet: rating 2025 is refused, 2024 (its land untouched) is not
    with pytest.raises(ValueError, match="请先运行 `mujun match`"):
        evaluate_year(engine, 2025, "zhejiang_default")
    assert evaluate_year(engine, 2024, "zhejiang_default").run_hash == before.run_hash
    match = run_matching(engine, settings=settings)
    return {"engine": engine, "d24": d24, "d25": d25, "before": before, "land24": land24,
            "report": report, "match": match, "settings": settings}


def test_zone_edge_data(tmp_path):
    """The premise: the 2025 parcels alone fall in the next Gauss-Krüger zone."""
    p24 = gpd.GeoDataFrame(county_2024()["parcels"], crs=GK).to_crs(4490)
    p25 = gpd.GeoDataFrame(county_2025()["parcels"], crs=GK).to_crs(4490)
    assert metric_crs_for(p24) == 4549
    assert metric_crs_for(p25) == 4550


def test_codes_do_not_depend_on_the_zone():
    """The same land hashed in EPSG:4549 and in EPSG:4550 gets the same 宗地身份码."""
    c = county_2024()
    p = gpd.GeoDataFrame(c["parcels"], crs=GK).rename(columns={"宗地代码": "parcel_code",
                                                              "权利人统一社会信用代码": "owner_uscc"})
    p.loc[0, "parcel_code"] = None  # a parcel without 宗地代码: R-X<hash>
    d = gpd.GeoDataFrame(c["defacto"], crs=GK).rename(columns={"使用企业统一社会信用代码": "user_uscc"})
    a = build_land(p, d, county_code=COUNTY)
    b = build_land(p.to_crs(4550), d.to_crs(4550), county_code=COUNTY)
    assert list(a["identity_code"]) == list(b["identity_code"])
    assert a["identity_code"].str.startswith(("R-X", "A-", "D-")).sum() == 4


def test_2025_delivery_keeps_codes_and_records_lineage(two_years):
    eng, rep = two_years["engine"], two_years["report"]
    land24, land25 = two_years["land24"], _land(eng, 2025)
    assert rep.land["year"] == 2025 and rep.land["mode"] == "complete"
    assert (rep.land["split"], rep.land["merged"], rep.land["recoded"]) == (2, 1, 1)
    # no unchanged or nudged piece changes code, nor gets a new version
    untouched = [f"R-{pcode(i)}" for i in range(6, 13)]
    defacto24 = list(land24.loc[land24["kind"] != "registered", "identity_code"])
    assert len(defacto24) == 3
    keep = land25.set_index("identity_code")
    for code in untouched + defacto24:
        assert code in keep.index, code
        assert keep.at[code, "valid_from"] == 2024, code  # the 2024 version is still the land
    assert rep.land["kept"] == len(untouched) + len(defacto24)
    # retired, split, merged and re-coded land is gone from 2025 but still in 2024
    gone = {f"R-{pcode(i)}" for i in (1, 2, 3, 4, 5)}
    assert gone <= set(land24["identity_code"]) and not gone & set(land25["identity_code"])
    with eng.connect() as conn:
        lineage = {tuple(r) for r in conn.execute(sa.text(
            "SELECT year, parent_code, child_code, kind FROM land_lineage"))}
        retired = dict(conn.execute(sa.text(
            "SELECT identity_code, valid_to FROM parcels WHERE valid_to IS NOT NULL")).all())
    assert lineage == {
        (2025, f"R-{pcode(1)}", f"R-{pcode(101)}", "split"), (2025, f"R-{pcode(1)}", f"R-{pcode(102)}", "split"),
        (2025, f"R-{pcode(2)}", f"R-{pcode(103)}", "merge"), (2025, f"R-{pcode(3)}", f"R-{pcode(103)}", "merge"),
        (2025, f"R-{pcode(5)}", f"R-{pcode(105)}", "recode")}
    assert retired == {c: 2025 for c in gone}
    # nothing counted twice: the land of 2025 is the 2025 delivery's land
    d25 = gpd.read_file(two_years["d25"] / "parcels.gpkg").to_crs(GK)
    dd = gpd.read_file(two_years["d25"] / "defacto.gpkg").to_crs(GK)
    assert len(land25) == len(d25) + len(dd)
    assert land25["area_m2"].sum() == pytest.approx(d25.area.sum() + dd.area.sum(), rel=2e-4)
    # the county keeps measuring in its own zone, so the kept pieces' areas are the 2024 ones
    assert land24.set_index("identity_code").loc[untouched, "area_m2"].tolist() == \
        keep.loc[untouched, "area_m2"].tolist()


def test_every_year_reads_its_own_land(two_years):
    eng, before = two_years["engine"], two_years["before"]
    with eng.connect() as conn:
        links = dict(conn.execute(sa.text("SELECT year, count(*) FROM land_links GROUP BY year")).all())
        el = {(r.year, r.uscc): r.land_area_m2 for r in conn.execute(sa.text(
            "SELECT year, uscc, land_area_m2 FROM enterprise_land"))}
        e12 = conn.execute(sa.text("SELECT year, identity_code, method FROM land_links WHERE uscc = :u "
                                   "ORDER BY year, identity_code"), {"u": uscc(12)}).all()
    assert set(links) == {2024, 2025}
    # enterprise 1 kept the east 60 m of its parcel: its 2025 land is that piece, as delivered
    d25 = gpd.read_file(two_years["d25"] / "parcels.gpkg").to_crs(GK)
    east_part = d25.loc[d25["宗地代码"] == pcode(102)].area.item()
    assert el[(2025, uscc(1))] == pytest.approx(east_part, rel=1e-4)
    assert el[(2024, uscc(1))] == pytest.approx(W * H / 2, abs=0.01)  # shared with 11 by the 纠偏
    # enterprise 6: its parcel and the attached strip, untouched
    assert el[(2025, uscc(6))] == pytest.approx(W * H + 8 * H, rel=1e-4)
    # the 纠偏 naming parcel 3 (merged since) is carried to the merged parcel; the one naming
    # parcel 1 (split in two) is ambiguous: applied in 2024, reported for 2025
    assert (2025, f"R-{pcode(103)}", "correction") in [tuple(r) for r in e12]
    assert (2024, f"R-{pcode(3)}", "correction") in [tuple(r) for r in e12]
    quality = pd.read_excel(two_years["match"].report_path, sheet_name="unapplied_corrections")
    assert pcode(1) in set(quality["parcel_code"].astype(str)) and quality["reason"].str.contains("分割").any()
    # re-running 2024 after the 2025 delivery: the same run hash and the same results
    again = evaluate_year(eng, 2024, "zhejiang_default")
    assert again.run_hash == before.run_hash and again.reused
    forced = evaluate_year(eng, 2024, "zhejiang_default", force=True)
    assert forced.run_hash == before.run_hash and forced.run_id != before.run_id
    assert _ratings(eng, forced.run_id) == _ratings(eng, before.run_id)
    # 2025 rates the 2025 land
    y25 = evaluate_year(eng, 2025, "zhejiang_default")
    with eng.connect() as conn:
        rated = set(conn.execute(sa.text("SELECT identity_code FROM parcel_ratings WHERE run_id = :r"),
                                 {"r": y25.run_id}).scalars())
    assert rated == set(_land(eng, 2025)["identity_code"])


def test_reimport_same_delivery_is_a_no_op_and_old_years_are_refused(two_years):
    eng, s = two_years["engine"], two_years["settings"]
    with eng.connect() as conn:
        before = conn.execute(sa.text("SELECT md5(string_agg(p::text, '|' ORDER BY version_id)) FROM parcels p")).scalar()
    again = import_bundle(eng, two_years["d25"], settings=s, year=2025)
    assert again.counts["parcels"] == {"inserted": 0, "updated": 0, "unchanged": again.land["kept"]}
    old = import_bundle(eng, two_years["d24"], settings=s)  # the very same 2024 delivery: a no-op
    assert old.land.get("replayed") and old.counts["parcels"]["inserted"] == 0
    with eng.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT md5(string_agg(p::text, '|' ORDER BY version_id)) FROM parcels p")).scalar() == before
    changed = write_delivery(two_years["d24"].parent / "2024b", county_2024(), noise_seed=1)
    with pytest.raises(DeliveryRefused, match="更早年度 2024"):
        import_bundle(eng, changed, settings=s, year=2024)


def test_truncated_complete_delivery_is_refused_unless_confirmed(engine, tmp_path, settings):
    import_bundle(engine, write_delivery(tmp_path / "a", county_2024()), settings=settings, year=2024)
    truncated = county_2024()
    truncated["parcels"] = truncated["parcels"][:6]  # a file cut short: 6 of 12 parcels missing
    path = write_delivery(tmp_path / "b", truncated, manifest={"year": 2025})
    with pytest.raises(DeliveryRefused) as err:
        import_bundle(engine, path, settings=settings)
    assert err.value.retire
    msg = str(err.value)
    assert "注销 6 宗" in msg and f"{6 * W * H / (10000 / 15):,.2f} 亩" in msg and "--allow-retire" in msg
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM parcels WHERE valid_to IS NOT NULL")).scalar() == 0
        assert conn.execute(sa.text("SELECT status FROM import_batches ORDER BY id DESC")).scalar() == "refused"
    # partial: nothing is retired
    part = import_bundle(engine, path, settings=settings, partial=True)
    assert part.land["mode"] == "partial" and part.land["retired"] == 0
    # confirmed: retired from 2025 on, never deleted
    done = import_bundle(engine, path, settings=settings, allow_retire=True)
    assert done.land["retired"] == 6
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM parcels WHERE valid_to = 2025")).scalar() == 6
        assert conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar() == 12 + 3


def _mujun(db_url: str, tmp_path, *args: str):
    """The command line in its own process (settings and engines are cached per process)."""
    import os
    import subprocess
    import sys

    env = os.environ | {"DATABASE_URL": db_url, "MUJUN_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_refusal_exit_code(engine, db_url, tmp_path):
    from app.ingest import RETIRE_REFUSED_EXIT

    ok = _mujun(db_url, tmp_path, "import", str(write_delivery(tmp_path / "a", county_2024())), "--year", "2024")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2024 年土地交付（全量）" in ok.stdout
    truncated = county_2024()
    truncated["parcels"] = truncated["parcels"][:3]
    bad = _mujun(db_url, tmp_path, "import", str(write_delivery(tmp_path / "b", truncated)), "--year", "2025")
    assert bad.returncode == RETIRE_REFUSED_EXIT
    assert "--allow-retire" in bad.stderr and "注销 9 宗" in bad.stderr


def test_land_diff_report(two_years, tmp_path):
    eng = two_years["engine"]
    diff = land_diff(eng, 2024, 2025).set_index("identity_code")
    st_ = diff["status"].to_dict()
    assert st_[f"R-{pcode(1)}"] == "split" and diff.at[f"R-{pcode(1)}", "related_codes"] == \
        f"R-{pcode(101)};R-{pcode(102)}"
    assert st_[f"R-{pcode(101)}"] == "split" and diff.at[f"R-{pcode(101)}", "related_codes"] == f"R-{pcode(1)}"
    assert st_[f"R-{pcode(2)}"] == st_[f"R-{pcode(3)}"] == st_[f"R-{pcode(103)}"] == "merged"
    assert st_[f"R-{pcode(4)}"] == "retired" and pd.isna(diff.at[f"R-{pcode(4)}", "area_mu_new"])
    assert st_[f"R-{pcode(5)}"] == st_[f"R-{pcode(105)}"] == "recoded"
    assert st_[f"R-{pcode(200)}"] == "new"
    assert sum(1 for s in st_.values() if s == "new") == 2  # the east parcel and the new de-facto piece
    assert st_[f"R-{pcode(6)}"] == "kept"
    assert diff.at[f"R-{pcode(6)}", "area_mu_old"] == diff.at[f"R-{pcode(6)}", "area_mu_new"]
    out = write_diff(diff.reset_index(), tmp_path / "diff.xlsx")
    back = pd.read_excel(out)
    assert list(back.columns) == ["宗地身份码", "状态", "相关宗地身份码", "原面积(亩)", "新面积(亩)"]
    assert (back["状态"] == "分割").sum() == 3 and (back["状态"] == "注销").sum() == 1
    csv = pd.read_csv(write_diff(diff.reset_index(), tmp_path / "diff.csv"), encoding="utf-8-sig")
    assert list(csv.columns) == ["identity_code", "status", "related_codes", "area_mu_old", "area_mu_new"]
    # the command: the file and a printed Chinese summary
    res = _mujun(eng.url.render_as_string(hide_password=False), tmp_path,
                 "land", "diff", "2024", "2025", "--out", str(tmp_path / "cli.xlsx"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2024 → 2025 年土地变化" in res.stdout and "分割 3 宗" in res.stdout and "注销 1 宗" in res.stdout
    assert len(pd.read_excel(tmp_path / "cli.xlsx")) == len(diff)


def test_archive_shows_versions_lineage_and_land_by_year(two_years):
    from fastapi.testclient import TestClient

    from app.auth import create_key
    from app.main import create_app

    eng = two_years["engine"]
    with eng.begin() as conn:
        key = create_key(conn, "t", "viewer")
    with TestClient(create_app(database_url=eng.url.render_as_string(hide_password=False))) as client:
        _archives(client, key)


def _archives(client, key):
    a = client.get(f"/parcels/R-{pcode(1)}").json()
    assert a["valid_to"] == 2025 and a["lineage"]["into"] == [
        {"year": 2025, "kind": "split", "code": f"R-{pcode(101)}"},
        {"year": 2025, "kind": "split", "code": f"R-{pcode(102)}"}]
    m = client.get(f"/parcels/R-{pcode(103)}").json()
    assert {x["code"] for x in m["lineage"]["from"]} == {f"R-{pcode(2)}", f"R-{pcode(3)}"}
    assert [v["valid_from"] for v in m["versions"]] == [2025]
    e = client.get(f"/enterprises/{uscc(1)}", headers={"X-API-Key": key}).json()
    by_year = {y["year"]: [p["identity_code"] for p in y["parcels"]] for y in e["land_by_year"]}
    assert by_year[2024] == [f"R-{pcode(1)}"] and by_year[2025] == [f"R-{pcode(102)}"]


# ------------------------------------------------------------------ property: any edits (pure)

def _grid(n: int) -> gpd.GeoDataFrame:
    rows = [{"parcel_code": pcode(i + 1), "owner_uscc": uscc(i + 1), "geometry": cell(i + 1)} for i in range(n)]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=GK)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["noise", "split", "merge", "retire", "add", "recode"]),
                          st.integers(0, 10 ** 6)), min_size=1, max_size=5))
def test_property_any_edits_conserve_area_and_keep_codes(edits):
    """Whatever sequence of yearly edits: every delivered piece gets exactly one code, the land
    after each delivery has the delivery's area, and a piece nobody edited keeps its code."""
    parcels = _grid(8)
    rng = np.random.default_rng(0)
    current = build_land(parcels, None).assign(valid=True)
    reserved = set(current["identity_code"])
    seq = 1000
    for op, k in edits:
        p = parcels.reset_index(drop=True)
        i = k % len(p) if len(p) else 0
        touched = set()
        if op == "split" and len(p):
            g = p.geometry.iloc[i]
            x0, y0, x1, y1 = g.bounds
            xm = x0 + (x1 - x0) * (0.3 + 0.4 * (k % 7) / 7)
            touched.add(p.at[i, "parcel_code"])
            halves = [shapely.clip_by_rect(g, x0, y0, xm, y1), shapely.clip_by_rect(g, xm, y0, x1, y1)]
            new = [{"parcel_code": pcode(seq + j), "owner_uscc": p.at[i, "owner_uscc"], "geometry": h}
                   for j, h in enumerate(halves)]
            seq += 2
            p = pd.concat([p.drop(index=i), gpd.GeoDataFrame(new, crs=GK)], ignore_index=True)
        elif op == "merge" and len(p) >= 2:
            j = (i + 1) % len(p)
            touched |= {p.at[i, "parcel_code"], p.at[j, "parcel_code"]}
            g = shapely.union_all([p.geometry.iloc[i], p.geometry.iloc[j]])
            new = gpd.GeoDataFrame([{"parcel_code": pcode(seq), "owner_uscc": p.at[i, "owner_uscc"],
                                     "geometry": g}], crs=GK)
            seq += 1
            p = pd.concat([p.drop(index=[i, j]), new], ignore_index=True)
        elif op == "retire" and len(p) > 1:
            touched.add(p.at[i, "parcel_code"])
            p = p.drop(index=i).reset_index(drop=True)
        elif op == "add":
            x, y = X0 - 500 - 130 * (seq % 50), Y0 + 90 * (k % 5)
            p = pd.concat([p, gpd.GeoDataFrame([{"parcel_code": pcode(seq), "owner_uscc": uscc(seq % 999),
                                                 "geometry": box(x, y, x + 100, y + 60)}], crs=GK)],
                          ignore_index=True)
            seq += 1
        elif op == "recode" and len(p):
            touched.add(p.at[i, "parcel_code"])
            p.at[i, "parcel_code"] = pcode(seq)
            seq += 1
        parcels = gpd.GeoDataFrame(p, geometry="geometry", crs=GK)
        # every delivery comes with centimetre noise and its rows in another order
        delivered = parcels.set_geometry(gpd.GeoSeries(_noisy(parcels.geometry, rng), index=parcels.index, crs=GK))
        delivered = delivered.sample(frac=1.0, random_state=k % 1000)
        land = build_land(delivered, None)
        cur = current[current["valid"]].drop(columns="valid").reset_index(drop=True)
        out = reconcile(cur, land, reserved=reserved)
        codes = out.land["identity_code"]
        assert codes.is_unique
        # area conservation: the new current land is exactly the delivery's land
        kept_old = set(out.land.loc[out.land["status"] == "kept", "identity_code"])
        after_area = (cur.set_index("identity_code").loc[sorted(kept_old)].area.sum()
                      + out.land.loc[out.land["status"] != "kept"].area.sum())
        # (kept pieces keep their old geometry: equal within the 2 cm noise band along boundaries)
        assert after_area == pytest.approx(land.area.sum(), abs=0.02 * land.length.sum())
        assert not set(out.retired["identity_code"]) & set(codes)
        # code stability: an untouched parcel keeps R-<its code>, with no new version
        for c in set(cur["parcel_code"].dropna()) - touched:
            if c in set(delivered["parcel_code"]):
                row = out.land.loc[out.land["parcel_code"] == c].iloc[0]
                assert row["identity_code"] == f"R-{c}" and row["status"] == "kept"
        reserved |= set(codes)
        # as in the database: a kept piece keeps its old version (geometry), the rest are new versions
        nxt = out.land.copy()
        kept = (nxt["status"] == "kept").to_numpy()
        old_geom = cur.set_index("identity_code").geometry
        geoms = nxt.geometry.to_numpy().copy()
        geoms[kept] = old_geom.loc[nxt.loc[kept, "identity_code"]].to_numpy()
        current = gpd.GeoDataFrame(nxt.drop(columns=["status", "provisional_code", "previous_code", "parents"]),
                                   geometry=geoms, crs=GK).assign(valid=True)


def test_migration_0003_keeps_existing_land_readable(empty_db_url):
    """Land and derived rows written before 0003 become one version valid from the earliest
    metrics year, and the links of every metrics year; a downgrade keeps the current land."""
    from app import db

    db.upgrade(empty_db_url, "0002")
    eng = sa.create_engine(empty_db_url)
    geom = "ST_Multi(ST_GeomFromText('POLYGON((121 30,121.001 30,121.001 30.001,121 30))', 4490))"
    with eng.begin() as conn:
        conn.execute(sa.text(f"""
            INSERT INTO enterprises (uscc, name) VALUES ('U1', 'e');
            INSERT INTO metrics (uscc, year) VALUES ('U1', 2023), ('U1', 2024);
            INSERT INTO parcels (identity_code, kind, area_m2, area_mu, geom) VALUES ('R-1', 'registered', 1, 1, {geom});
            INSERT INTO land_links (identity_code, uscc, role, method, confidence)
                VALUES ('R-1', 'U1', 'owner_occupier', 'owner_code', 1);
            INSERT INTO enterprise_land (uscc, land_area_m2, land_area_mu, parcel_count) VALUES ('U1', 1, 1, 1)"""))
    db.upgrade(empty_db_url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT identity_code, valid_from, valid_to FROM parcels")).all() == \
            [("R-1", 2023, None)]
        assert conn.execute(sa.text("SELECT year FROM land_links ORDER BY year")).scalars().all() == [2023, 2024]
        assert conn.execute(sa.text("SELECT year FROM enterprise_land ORDER BY year")).scalars().all() == [2023, 2024]
    db.downgrade(empty_db_url, "0002")
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT identity_code FROM parcels")).scalars().all() == ["R-1"]
        assert conn.execute(sa.text("SELECT count(*) FROM land_links")).scalar() == 1
    eng.dispose()


def test_exports_read_the_land_of_their_year(two_years, tmp_path):
    from app.export import export_table

    eng = two_years["engine"]
    n24 = export_table(eng, "parcels", tmp_path / "p24.csv", year=2024)
    n25 = export_table(eng, "parcels", tmp_path / "p25.csv")  # default: the current land
    assert (n24, n25) == (len(two_years["land24"]), len(_land(eng, 2025)))
    l24 = pd.read_csv(tmp_path / "p24.csv", encoding="utf-8-sig")
    assert f"R-{pcode(3)}" in set(l24["identity_code"]) and f"R-{pcode(103)}" not in set(l24["identity_code"])
    export_table(eng, "links", tmp_path / "k25.csv", year=2025)
    k25 = pd.read_csv(tmp_path / "k25.csv", encoding="utf-8-sig")
    assert set(k25.loc[k25["uscc"] == uscc(1), "identity_code"]) == {f"R-{pcode(102)}"}


def test_overlapping_pieces_of_one_delivery_each_keep_their_code():
    """Two de-facto pieces drawn over the same yard (overlapping each other, as real deliveries
    have): re-delivered with noise and in another order, each keeps its own code — no merge."""
    p = gpd.GeoDataFrame({"parcel_code": [pcode(1)], "owner_uscc": [uscc(1)]}, geometry=[cell(1)], crs=GK)
    yard = box(X0, Y0 - 100, X0 + 60, Y0 - 40)
    d = gpd.GeoDataFrame({"user_uscc": [uscc(2), uscc(3)]},
                         geometry=[yard, shapely.affinity.translate(yard, 5, 3)], crs=GK)
    before = build_land(p, d, county_code=COUNTY)
    rng = np.random.default_rng(5)
    d2 = d.set_geometry(gpd.GeoSeries(_noisy(d.geometry, rng), crs=GK)).iloc[::-1]
    out = reconcile(before, build_land(p, d2, county_code=COUNTY))
    assert set(out.land["status"]) == {"kept"} and len(out.lineage) == 0 and len(out.retired) == 0
    assert sorted(out.land["identity_code"]) == sorted(before["identity_code"])


def test_map_layers_show_the_land_of_their_year(two_years):
    """OGC API Features (and so tiles, which share the layer SQL): year=2024 shows the 2024 land,
    year=2025 (the newest, the default) the 2025 land — never both."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    eng = two_years["engine"]
    evaluate_year(eng, 2025, "zhejiang_default", publish=True)
    with TestClient(create_app(database_url=eng.url.render_as_string(hide_password=False))) as client:
        def codes(**params):
            r = client.get("/collections/parcels/items", params={"limit": 1000, **params})
            assert r.status_code == 200, r.text
            return {f["properties"]["identity_code"] for f in r.json()["features"]}

        assert codes(year=2024) == set(two_years["land24"]["identity_code"])
        assert codes(year=2025) == codes() == set(_land(eng, 2025)["identity_code"])
        # the vector tile over parcel 2 (merged with 3 in 2025): the 2024 parcel or the 2025 one
        from tests.test_tiles import features_in, lonlat_to_tile

        lon, lat = Transformer.from_crs(GK, 4490, always_xy=True).transform(*cell(2).centroid.coords[0])
        x, y = lonlat_to_tile(lon, lat, 16)
        in24 = set(features_in(client.get(f"/tiles/parcels/16/{x}/{y}.pbf", params={"year": 2024})))
        in25 = set(features_in(client.get(f"/tiles/parcels/16/{x}/{y}.pbf", params={"year": 2025})))
        assert f"R-{pcode(2)}" in in24 and f"R-{pcode(103)}" not in in24
        assert f"R-{pcode(103)}" in in25 and f"R-{pcode(2)}" not in in25


def test_same_year_correction_updates_in_place_and_partial_only_adds(engine, tmp_path, settings):
    """A corrected delivery of the same year replaces that year's version (no second version of
    one year); a partial delivery adds and changes land and retires nothing absent from it."""
    import_bundle(engine, write_delivery(tmp_path / "a", county_2024()), settings=settings, year=2024)
    fixed = county_2024()
    fixed["parcels"][5]["geometry"] = box(*cell(6).bounds[:2], cell(6).bounds[2] - 5, cell(6).bounds[3])
    rep = import_bundle(engine, write_delivery(tmp_path / "b", fixed), settings=settings, year=2024)
    assert rep.land["changed"] >= 1 and rep.land["retired"] == 0
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT valid_from, valid_to, area_m2 FROM parcels WHERE identity_code = :c"),
                            {"c": f"R-{pcode(6)}"}).all()
    assert len(rows) == 1 and rows[0][:2] == (2024, None) and rows[0][2] == pytest.approx(95 * H, rel=1e-6)
    extra = {"parcels": [{**county_2024()["parcels"][0], "宗地代码": pcode(300),
                          "geometry": box(X0 - 300, Y0, X0 - 200, Y0 + 60)}], "defacto": []}
    part = import_bundle(engine, write_delivery(tmp_path / "c", extra, corrections=False), settings=settings,
                         year=2025, partial=True)
    assert (part.land["new"], part.land["retired"]) == (1, 0)
    land25 = _land(engine, 2025)
    assert len(land25) == len(_land(engine, 2024)) + 1 and f"R-{pcode(300)}" in set(land25["identity_code"])


def test_land_that_comes_back_takes_its_old_code(engine, tmp_path, settings):
    """A de-facto yard left out of the 2025 survey and drawn again (with noise) in 2026, and a
    registered parcel retired in 2025 and delivered again in 2026, take their old 宗地身份码 again
    (status ``revived``, a new version from 2026), never ``…-2``; the diff says 恢复."""
    base = county_2024()
    import_bundle(engine, write_delivery(tmp_path / "a", base), settings=settings, year=2024)
    codes24 = _land(engine, 2024)
    with engine.connect() as conn:  # the 临时仓库 piece: 50 m × 40 m at (X0, Y0 - 70)
        yard_code = conn.execute(sa.text(
            "SELECT identity_code FROM parcels WHERE ST_Intersects(geom, ST_Transform("
            "ST_SetSRID(ST_MakePoint(:x, :y), :gk), 4490))"), {"x": X0 + 25, "y": Y0 - 50, "gk": GK}).scalar_one()
    assert yard_code.startswith("D-")
    gone = {"parcels": [p for p in base["parcels"] if p["宗地代码"] != pcode(4)],
            "defacto": [d for d in base["defacto"] if d["备注"] != "临时仓库"]}
    r25 = import_bundle(engine, write_delivery(tmp_path / "b", gone), settings=settings, year=2025)
    assert r25.land["retired"] == 2
    back = import_bundle(engine, write_delivery(tmp_path / "c", base, noise_seed=3, shuffle_seed=2),
                         settings=settings, year=2026)
    assert back.land["revived"] == 2 and back.land["new"] == 0
    land26 = set(_land(engine, 2026)["identity_code"])
    assert land26 == set(codes24["identity_code"]) and not any(c.endswith("-2") for c in land26)
    with engine.connect() as conn:
        spans = conn.execute(sa.text("SELECT identity_code, valid_from, valid_to FROM parcels "
                                     "WHERE identity_code = ANY(:c) ORDER BY 1, 2"),
                             {"c": [yard_code, f"R-{pcode(4)}"]}).all()
    assert [tuple(s[1:]) for s in spans] == [(2024, 2025), (2026, None)] * 2
    diff = land_diff(engine, 2025, 2026).set_index("identity_code")["status"]
    assert diff[yard_code] == "revived" and diff[f"R-{pcode(4)}"] == "revived"


def test_a_new_yard_on_retired_land_of_another_family_gets_a_new_code():
    """Revival keeps to the code family: attached land (A-) drawn where an independent de-facto
    piece (D-) was retired is not that piece again."""
    p = gpd.GeoDataFrame({"parcel_code": [pcode(1)], "owner_uscc": [uscc(1)]}, geometry=[cell(1)], crs=GK)
    yard = gpd.GeoDataFrame({"user_uscc": [uscc(9)]}, geometry=[box(X0, Y0 - 70, X0 + 50, Y0 - 30)], crs=GK)
    before = build_land(p, yard, county_code=COUNTY)
    retired = before[before["identity_code"].str.startswith("D-")][["identity_code", "geometry"]]
    now = build_land(p, yard.iloc[:0], county_code=COUNTY)
    back = reconcile(now, build_land(p, yard, county_code=COUNTY), reserved=set(before["identity_code"]),
                     retired_land=retired)
    assert list(back.land.loc[back.land["status"] == "revived", "identity_code"]) == list(retired["identity_code"])
    attached = yard.assign(user_uscc=[uscc(1)], geometry=[box(X0, Y0 - 20, X0 + 50, Y0)])  # touches parcel 1
    other = reconcile(now, build_land(p, attached, county_code=COUNTY), reserved=set(before["identity_code"]),
                      retired_land=retired)
    assert "revived" not in set(other.land["status"])
