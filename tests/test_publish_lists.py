"""低效用地 and 连片低效用地 lists (`mujun export low-yield|clusters`) and the map's "导出 Excel"
download (/lists/…): rows limited to the caller's township, columns to what its role may see."""

from __future__ import annotations

import io

import openpyxl
import pytest
import sqlalchemy as sa

from app.auth import Principal
from tests.published import published_county
from tests.test_cli import _mujun


@pytest.fixture(scope="module")
def county(county_db_url, tmp_path_factory):
    with published_county(county_db_url, tmp_path_factory.mktemp("lists"), {
            "analyst": ("analyst", False), "viewer_town": ("viewer", True), "analyst_town": ("analyst", True)}) as c:
        yield c


def _sheets(body: bytes) -> dict[str, list[dict]]:
    wb = openpyxl.load_workbook(io.BytesIO(body))
    out = {}
    for ws in wb:
        if ws.title == "汇总":
            continue
        values = list(ws.iter_rows(values_only=True))
        out[ws.title] = [dict(zip(values[0], r)) for r in values[1:]]
    return out


def test_low_yield_list_is_idle_or_under_the_standard(county, county_db_url, tmp_path):
    eng, year, run, *_ = county
    out = tmp_path / "ly.xlsx"
    res = _mujun(county_db_url, "export", "low-yield", "--year", str(year), "--out", str(out), data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [r for rs in _sheets(out.read_bytes()).values() for r in rs]
    with eng.connect() as conn:
        want = {c for (c,) in conn.execute(sa.text(
            "SELECT identity_code FROM parcel_ratings WHERE run_id = :r AND (idle OR low_yield_years >= 1)"),
            {"r": run})}
        # the standard as the evaluation applied it: 亩均税收 ≤ 5 万元/亩 (以下 inclusive), rounded to 2 places
        under = {c for (c,) in conn.execute(sa.text(
            "SELECT identity_code FROM parcel_ratings WHERE run_id = :r AND round(tax_per_mu::numeric, 2) <= 5"),
            {"r": run})}
    assert {r["宗地身份码"] for r in rows} == want and len(rows) == len(want) > 0
    assert under <= want
    for r in rows:
        assert r["低效原因"], r
        assert ("闲置" in r["低效原因"]) == (r.get("闲置") == "是")
        if r["宗地身份码"] in under:
            assert "5 万元/亩以下" in r["低效原因"]


def test_cluster_list_matches_the_cluster_endpoint(county, county_db_url, tmp_path):
    eng, year, run, town, keys, client = county
    out = tmp_path / "cl.xlsx"
    res = _mujun(county_db_url, "export", "clusters", "--year", str(year), "--min-area-mu", "20",
                 "--out", str(out), data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    sheets = _sheets(out.read_bytes())
    api = client.get("/clusters", params={"year": year, "min_area_mu": 20, "limit": 5000},
                     headers={"X-API-Key": keys["analyst"]}).json()
    blocks = sheets["连片低效用地"]
    assert [b["连片编号"] for b in blocks] == [c["id"] for c in api["clusters"]]
    assert [b["宗数"] for b in blocks] == [c["member_count"] for c in api["clusters"]]
    members = sheets["成员宗地"]
    assert len(members) == sum(c["member_count"] for c in api["clusters"])
    by_block = {c["id"]: set(c["members"]) for c in api["clusters"]}
    for m in members:
        assert m["宗地身份码"] in by_block[m["连片编号"]]
    assert all(b["总税收(万元)"] is not None for b in blocks)  # the CLI (county staff) sees figures


def test_township_key_downloads_only_its_township(county):
    eng, year, run, town, keys, client = county
    for kind, level, col in (("ratings", "enterprise", "镇街"), ("ratings", "parcel", "镇街"),
                             ("low-yield", "parcel", "镇街")):
        r = client.get(f"/lists/{kind}.xlsx", params={"year": year, "level": level},
                       headers={"X-API-Key": keys["viewer_town"]})
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["content-disposition"]
        rows = [row for rs in _sheets(r.content).values() for row in rs]
        assert rows and {row[col] for row in rows} == {town}, (kind, level)
        # the viewer sees ranks and names, never figures
        header = set(rows[0])
        assert "组内排名" in header or "不参评原因" in header
        assert not header & {"亩均税收(万元/亩)", "综合得分", "差别电价(元)"}, header
    with eng.connect() as conn:
        n_town = conn.execute(sa.text(
            "SELECT count(*) FROM enterprise_ratings r JOIN enterprises e USING (uscc) "
            "WHERE r.run_id = :r AND e.township = :t"), {"r": run, "t": town}).scalar_one()
    r = client.get("/lists/ratings.xlsx", params={"year": year}, headers={"X-API-Key": keys["analyst_town"]})
    rows = [row for rs in _sheets(r.content).values() for row in rs]
    assert len(rows) == n_town == int(r.headers["x-rows"])
    assert "亩均税收(万元/亩)" in set().union(*map(set, rows))  # an analyst sees figures
    # asking for another township gives nothing of it
    other = client.get("/lists/ratings.csv", params={"year": year, "township": "不存在镇"},
                       headers={"X-API-Key": keys["analyst_town"]})
    assert other.status_code == 200 and int(other.headers["x-rows"]) == 0
    # clusters: members only from the township
    r = client.get("/lists/clusters.xlsx", params={"year": year}, headers={"X-API-Key": keys["viewer_town"]})
    sheets = _sheets(r.content)
    assert {m["镇街"] for m in sheets["成员宗地"]} == {town}
    assert not set(sheets["连片低效用地"][0]) & {"总税收(万元)", "平均亩均税收(万元/亩)"}


def test_anonymous_download_has_no_identities_or_figures(county):
    eng, year, run, town, keys, client = county
    assert client.get("/lists/ratings.xlsx", params={"year": year}).status_code == 401
    assert client.get("/lists/low-yield.xlsx", params={"year": year}).status_code == 401
    r = client.get("/lists/ratings.xlsx", params={"year": year, "level": "parcel"})
    assert r.status_code == 200
    rows = [row for rs in _sheets(r.content).values() for row in rs]
    header = set(rows[0])
    public = Principal("public")
    from app.lists import _FIELDS
    for h in header:
        assert public.sees(_FIELDS.get(h, "area_mu" if h == "用地面积(亩)" else "indicators")), h
    assert {"宗地身份码", "等级", "预警颜色"} <= header
    assert not header & {"权利人", "组内排名", "亩均税收(万元/亩)", "综合得分", "调整规则"}
    csv = client.get("/lists/clusters.csv", params={"year": year})
    assert csv.status_code == 200 and "亩均税收" not in csv.content.decode("utf-8-sig")
    assert client.get("/lists/nope.xlsx", params={"year": year}).status_code == 404
    assert client.get("/lists/ratings.xlsx", params={"year": 1999, "level": "parcel"}).status_code == 404
