"""Vector tiles and TileJSON on a real PostGIS: ids, attributes by role, region scope, zooms, caching.

Also home of :func:`seed_county`, the small synthetic county the tests of tiles, archives,
clusters, styles and access control share (``from tests.test_tiles import seed_county``): a grid of
100 m × 80 m parcels near 120.1°E 30.2°N separated by 20 m roads, in two townships 300 m
apart, with enterprises, links, sub-lots, metrics, three evaluation runs and API keys.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import mapbox_vector_tile
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app import db
from app.api.tiles import feature_id
from app.auth import create_key
from app.main import create_app
from spatial.identifiers import make_uscc
from tests.conftest import TEMPLATE

LON0, LAT0 = 120.10, 30.20
M_LON = 111320.0 * math.cos(math.radians(30.2))  # metres per degree of longitude here
M_LAT = 110860.0
W, H, ROAD, TOWN_GAP = 100.0, 80.0, 20.0, 300.0
T1, T2 = "东城街道", "西城街道"

#: (col, row) → 2024 grade; everything else is A or B. Cols 0-3 are T1, 4-7 are T2.
GRADES_2024 = {
    (0, 0): "C", (1, 0): "D", (2, 0): "C", (0, 1): "D", (1, 1): "C", (2, 1): "D",  # T1 block, 72 亩
    (3, 4): "D",                                                                    # T1 isolated, 12 亩
    (4, 0): "D", (5, 0): "C", (4, 1): "C",                                          # T2 block, idle (4,0)
    (7, 3): "D",                                                                    # T2 isolated
}
IDLE = {(4, 0)}
TAX = {"A": 30.0, "B": 15.0, "C": 6.0, "D": 2.0}
AREA_M2 = W * H
AREA_MU = AREA_M2 / (10000.0 / 15)


def col_x(i: int) -> float:
    return i * (W + ROAD) + (TOWN_GAP if i >= 4 else 0.0)


def rect(x0: float, y0: float, w: float, h: float) -> str:
    """A MULTIPOLYGON in EPSG:4490 from a rectangle in local metres."""
    a, b = LON0 + x0 / M_LON, LAT0 + y0 / M_LAT
    c, d = LON0 + (x0 + w) / M_LON, LAT0 + (y0 + h) / M_LAT
    return f"MULTIPOLYGON((({a} {b},{c} {b},{c} {d},{a} {d},{a} {b})))"


def parcel_code(i: int, j: int) -> str:
    return f"330110{(1 if i < 4 else 2):03d}{j + 1:03d}GB{i * 10 + j + 1:05d}"


def identity(i: int, j: int) -> str:
    return "R-" + parcel_code(i, j)


def uscc_of(i: int, j: int, k: int = 0) -> str:
    return make_uscc(f"91330110{k}{i:04d}{j:04d}")


@dataclass
class County:
    url: str
    keys: dict[str, str] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    attached: str = ""
    independent: str = ""
    shared_parcel: str = ""
    landlord: str = ""
    tenant: str = ""

    def headers(self, who: str | None) -> dict:
        return {"X-API-Key": self.keys[who]} if who else {}


def seed_county(url: str) -> County:
    """Insert the synthetic county into the migrated database at ``url``."""
    county = County(url)
    parcels, enterprises, links, sublots, pmetrics, emetrics, eland = [], [], [], [], [], [], []
    pr, er = [], []  # (run key, row)
    for i in range(8):
        for j in range(5):
            code, town = identity(i, j), (T1 if i < 4 else T2)
            g24 = GRADES_2024.get((i, j), "A" if (i + j) % 2 else "B")
            g23 = "C" if (i, j) == (3, 4) else g24
            us = uscc_of(i, j)
            parcels.append(dict(identity_code=code, kind="registered", parcel_code=parcel_code(i, j),
                                owner_uscc=us, owner_name=f"企业{i}-{j}有限公司", land_use="工业用地",
                                township=town, registered_area_m2=AREA_M2, area_m2=AREA_M2, area_mu=AREA_MU,
                                geom=rect(col_x(i), j * (H + ROAD), W, H)))
            cx, cy = LON0 + (col_x(i) + W / 2) / M_LON, LAT0 + (j * (H + ROAD) + H / 2) / M_LAT
            enterprises.append(dict(uscc=us, name=f"企业{i}-{j}有限公司", industry_code="C34",
                                    scale="规上", township=town, address=f"{town}{i}号", flags=None,
                                    geom=f"POINT({cx} {cy})"))
            idle = (i, j) in IDLE
            for year, g in ((2023, g23), (2024, g24)):
                tpm = None if idle else TAX[g]
                pmetrics.append(dict(identity_code=code, year=year, tax_paid=None if idle else tpm * AREA_MU,
                                     value_added=None if idle else tpm * AREA_MU * 4, occupant_count=1))
                emetrics.append(dict(uscc=us, year=year, tax_paid=None if idle else tpm * AREA_MU,
                                     value_added=None if idle else tpm * AREA_MU * 4, electricity_kwh=1e6))
                expl = {"kind": "parcel", "subject_id": code, "evaluated": not idle, "year": year,
                        "grade": g, "total": 50.0, "rank": 3, "rank_n": 40, "list": "规上", "group": "全部",
                        "indicators": [{"key": "tax_per_mu", "title": "亩均税收", "unit": "万元/亩",
                                        "value": tpm, "baseline": 15.0, "weight": 30,
                                        "points": (tpm or 0) / 15 * 30, "coefficient": 1.0}],
                        "explanation_text": f"宗地等级 {code}：亩均税收 {tpm} 万元/亩"}
                rk = str(year)
                pr.append((rk, dict(identity_code=code, grade=g, colour={"A": "绿", "B": "蓝", "C": "橙", "D": "红"}[g],
                                    industry_group="全部", list_name="规上", score=50.0, rank=3, percentile=7.5,
                                    tax_per_mu=tpm, idle=idle, explanation=expl,
                                    warnings=["闲置"] if idle else [], low_yield_years=2 if g == "D" else 0)))
                er.append((rk, dict(uscc=us, grade=g, colour="红" if g == "D" else "绿", industry_group="全部",
                                    list_name="规上", score=50.0, rank=3, percentile=7.5, tax_per_mu=tpm,
                                    explanation={**expl, "kind": "enterprise", "subject_id": us},
                                    consecutive_d_years=(2 if g == "D" and year == 2024 else 1 if g == "D" else 0),
                                    electricity_surcharge_yuan=300000.0 if g == "D" else None,
                                    land_area_mu=AREA_MU)))
            if (i, j) == (1, 1):  # landlord + tenant share this parcel: 60/40
                tenant = uscc_of(i, j, 5)
                county.shared_parcel, county.landlord, county.tenant = code, us, tenant
                enterprises.append(dict(uscc=tenant, name="租户科技有限公司", industry_code="C39", scale="规下",
                                        township=town, address="租赁厂房", flags="过渡期",
                                        geom=f"POINT({cx + 0.0001} {cy})"))
                links += [dict(identity_code=code, uscc=us, parcel_code=parcel_code(i, j), role="landlord",
                               method="owner_code", confidence=1.0, share=0.6,
                               attributed_area_m2=AREA_M2 * 0.6, attributed_area_mu=AREA_MU * 0.6),
                          dict(identity_code=code, uscc=tenant, parcel_code=parcel_code(i, j), role="tenant",
                               method="lease", confidence=0.9, share=0.4,
                               attributed_area_m2=AREA_M2 * 0.4, attributed_area_mu=AREA_MU * 0.4)]
                sublots += [dict(identity_code=code, uscc=us, share=0.6, area_m2=AREA_M2 * 0.6,
                                 geom=rect(col_x(i), j * (H + ROAD), W * 0.6, H)),
                            dict(identity_code=code, uscc=tenant, share=0.4, area_m2=AREA_M2 * 0.4,
                                 geom=rect(col_x(i) + W * 0.6, j * (H + ROAD), W * 0.4, H))]
                eland.append(dict(uscc=tenant, land_area_m2=AREA_M2 * 0.4, land_area_mu=AREA_MU * 0.4,
                                  parcel_count=1, owned_area_m2=0, leased_in_area_m2=AREA_M2 * 0.4,
                                  land_class="III"))
                for year in (2023, 2024):
                    er.append((str(year), dict(uscc=tenant, grade="B", colour="蓝", industry_group="全部",
                                               list_name="租赁企业", score=40.0, rank=5, percentile=20.0,
                                               tax_per_mu=9.0, explanation={"evaluated": True, "grade": "B"},
                                               consecutive_d_years=0, land_area_mu=AREA_MU * 0.4)))
            else:
                links.append(dict(identity_code=code, uscc=us, parcel_code=parcel_code(i, j), role="owner_occupier",
                                  method="owner_code", confidence=1.0, share=1.0,
                                  attributed_area_m2=AREA_M2, attributed_area_mu=AREA_MU))
            eland.append(dict(uscc=us, land_area_m2=AREA_M2, land_area_mu=AREA_MU, parcel_count=1,
                              owned_area_m2=AREA_M2, leased_in_area_m2=0, land_class="I"))
    # de-facto land: a 10 m strip attached to R-(0,4) (in the road east of it), one independent piece in T2
    county.attached = "A-" + parcel_code(0, 4) + "-7K3M9Q2XWT"
    parcels.append(dict(identity_code=county.attached, kind="defacto_attached", parcel_code=parcel_code(0, 4),
                        parent_identity_code=identity(0, 4), user_uscc=uscc_of(0, 4), township=T1,
                        area_m2=10 * H, area_mu=10 * H / (10000 / 15), geom=rect(W, 4 * (H + ROAD), 10, H),
                        owner_uscc=None, owner_name=None, land_use=None, registered_area_m2=None))
    county.independent = "D-330110-0F4Z8H1C6P"
    parcels.append(dict(identity_code=county.independent, kind="defacto", parcel_code=None,
                        parent_identity_code=None, user_uscc=uscc_of(7, 3), township=T2,
                        area_m2=30 * 30, area_mu=900 / (10000 / 15), geom=rect(col_x(7), 6 * (H + ROAD), 30, 30),
                        owner_uscc=None, owner_name=None, land_use=None, registered_area_m2=None))
    links.append(dict(identity_code=county.attached, uscc=uscc_of(0, 4), parcel_code=parcel_code(0, 4),
                      role="owner_occupier", method="snap", confidence=0.5, share=1.0,
                      attributed_area_m2=10 * H, attributed_area_mu=10 * H / (10000 / 15)))

    eng = sa.create_engine(url)
    with eng.begin() as conn:
        def ins(table: str, rows: list[dict]) -> None:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            conn.execute(sa.text(
                f"INSERT INTO {table} ({', '.join(keys)}) VALUES ("
                + ", ".join((f"ST_GeomFromText(:{k}, 4490)" if k == "geom" else
                             f"CAST(:{k} AS jsonb)" if k in ("explanation", "warnings") else f":{k}")
                            for k in keys) + ")"),
                [{k: (orjson.dumps(r.get(k)).decode() if k in ("explanation", "warnings") else r.get(k))
                  for k in keys} for r in rows])

        ins("parcels", parcels)
        ins("enterprises", enterprises)
        ins("land_links", links)
        ins("sublots", sublots)
        ins("parcel_metrics", pmetrics)
        ins("metrics", emetrics)
        ins("enterprise_land", eland)
        scheme = {"name": "test", "grades": ["A", "B", "C", "D"],
                  "colours": {"A": {"name": "绿", "hex": "#00aa00"}, "B": {"name": "蓝", "hex": "#0000aa"},
                              "C": {"name": "橙", "hex": "#ff8800"}, "D": {"name": "红", "hex": "#cc0000"}}}
        for key, year, status in (("2023", 2023, "published"), ("2024", 2024, "published"),
                                  ("2024draft", 2024, "draft")):
            county.runs[key] = conn.execute(sa.text(
                "INSERT INTO evaluation_runs (year, scheme_name, scheme_version, scheme_hash, inputs_fingerprint,"
                " run_hash, status, scheme) VALUES (:y, 'test', '1', 'h', 'f', :rh, :st, CAST(:sc AS jsonb))"
                " RETURNING id"), {"y": year, "rh": key, "st": status, "sc": orjson.dumps(scheme).decode()}).scalar()
        for table, rows in (("parcel_ratings", pr), ("enterprise_ratings", er)):
            data = [{**r, "run_id": county.runs[k]} for k, r in rows]
            # the newer draft of 2024 says A everywhere: it must never be shown while 2024 is published
            data += [{**r, "run_id": county.runs["2024draft"], "grade": "A"} for k, r in rows if k == "2024"]
            ins(table, data)
        conn.execute(sa.text("INSERT INTO data_version (id, version) VALUES (1, 5)"))
        for name, role, region in (("public", "public", None), ("viewer", "viewer", None),
                                   ("analyst", "analyst", None), ("admin", "admin", None),
                                   ("analyst_t2", "analyst", T2), ("viewer_t1", "viewer", T1)):
            county.keys[name] = create_key(conn, name, role, region)
    eng.dispose()
    return county


@pytest.fixture(scope="module")
def county(_template, pg_admin_url) -> County:
    """One seeded database per test module (the tests only read, except data-version bumps)."""
    name = f"mujun_c_{uuid.uuid4().hex[:10]}"
    with _template.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    yield seed_county(str(sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)))
    db._cached_engine.cache_clear()
    with _template.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def client(county):
    with TestClient(create_app(database_url=county.url)) as c:
        yield c


# --------------------------------------------------------------------------- tile maths


def lonlat_to_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def tile_of(i: int, j: int, z: int) -> tuple[int, int]:
    return lonlat_to_tile(LON0 + (col_x(i) + W / 2) / M_LON, LAT0 + (j * (H + ROAD) + H / 2) / M_LAT, z)


def decode(content: bytes) -> dict:
    return mapbox_vector_tile.decode(content, default_options={"y_coord_down": True})


def get_layer(client, layer: str, z: int, x: int, y: int, who=None, county=None, **params):
    r = client.get(f"/tiles/{layer}/{z}/{x}/{y}.pbf", params=params,
                   headers=county.headers(who) if county and who else {})
    return r


def features_in(r) -> dict:
    """identity → feature, for a 200 tile (empty dict for 204)."""
    if r.status_code == 204:
        return {}
    assert r.status_code == 200, r.text
    tile = decode(r.content)
    (name, lay), = tile.items()
    return {f["properties"].get("identity_code") or f["properties"].get("uscc"): f for f in lay["features"]}


# --------------------------------------------------------------------------- tests


def test_tile_has_feature_ids_grades_and_geometry_in_the_tile(client, county):
    z = 15
    x, y = tile_of(0, 0, z)
    r = get_layer(client, "parcels", z, x, y)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    feats = features_in(r)
    code = identity(0, 0)
    assert code in feats
    f = feats[code]
    assert f["id"] == feature_id(code) and f["id"] < 2 ** 53
    props = f["properties"]
    assert props["grade"] == "C" and props["colour"] == "橙"  # the published 2024 run, not the newer draft
    assert props["run_id"] == county.runs["2024"]
    assert math.isclose(props["area_mu"], AREA_MU, rel_tol=1e-3)
    # public: no figures, no names
    assert not {"tax_per_mu", "owner_name", "owner_uscc", "score"} & set(props)
    # the geometry is inside the tile's extent (plus buffer) and is a polygon
    assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
    coords = f["geometry"]["coordinates"]
    flat = [pt for ring in (coords if f["geometry"]["type"] == "Polygon" else [r for p in coords for r in p])
            for pt in ring]
    assert all(-64 <= px <= 4096 + 64 and -64 <= py <= 4096 + 64 for px, py in flat)
    # every parcel in the tile really lies in that tile
    for code, feat in feats.items():
        if code.startswith("R-"):
            i, j = next((a, b) for a in range(8) for b in range(5) if identity(a, b) == code)
            tx, ty = tile_of(i, j, z)
            assert abs(tx - x) <= 1 and abs(ty - y) <= 1


def test_feature_ids_are_stable_and_unique_across_layers(client, county):
    z = 14
    x, y = tile_of(0, 0, z)
    a = features_in(get_layer(client, "parcels", z, x, y))
    b = features_in(get_layer(client, "parcels", z, x, y))
    assert {k: f["id"] for k, f in a.items()} == {k: f["id"] for k, f in b.items()}
    assert len({f["id"] for f in a.values()}) == len(a)
    ents = features_in(get_layer(client, "enterprises", z, x, y, who="viewer", county=county))
    assert ents and all(f["id"] == feature_id(u) for u, f in ents.items())
    # without a key, no identity (issue 12): no USCC, and an id that is not the USCC's hash
    anon = decode(get_layer(client, "enterprises", z, x, y).content)["enterprises"]["features"]
    assert len(anon) == len(ents) and not any("uscc" in f["properties"] or "name" in f["properties"] for f in anon)
    assert not {f["id"] for f in anon} & {feature_id(u) for u in ents}
    sub = get_layer(client, "sublots", 16, *tile_of(1, 1, 16), who="viewer", county=county)
    tile = decode(sub.content)["sublots"]
    ids = {f["properties"]["identity_code"] + "/" + f["properties"]["uscc"]: f["id"] for f in tile["features"]}
    assert ids == {f"{county.shared_parcel}/{u}": feature_id(f"{county.shared_parcel}/{u}")
                   for u in (county.landlord, county.tenant)}


def test_run_and_year_parameters(client, county):
    z = 15
    x, y = tile_of(3, 4, z)
    now = features_in(get_layer(client, "parcels", z, x, y))[identity(3, 4)]["properties"]
    old = features_in(get_layer(client, "parcels", z, x, y, year=2023))[identity(3, 4)]["properties"]
    draft = features_in(get_layer(client, "parcels", z, x, y, run=county.runs["2024draft"], who="analyst",
                                  county=county))[identity(3, 4)]
    # drafts only for roles that review them (issue 12): not anonymous, public or viewer callers
    for who in (None, "public", "viewer"):
        assert get_layer(client, "parcels", z, x, y, run=county.runs["2024draft"], who=who,
                         county=county).status_code == 404
    assert (now["grade"], old["grade"], draft["properties"]["grade"]) == ("D", "C", "A")
    assert old["run_id"] == county.runs["2023"]
    r = get_layer(client, "parcels", z, x, y, year=1999)
    assert r.status_code == 404 and "2023, 2024" in r.json()["description"]
    assert get_layer(client, "parcels", z, x, y, run=987654).status_code == 404


def test_roles_see_their_properties_only(client, county):
    z = 15
    x, y = tile_of(0, 0, z)
    p = {who: features_in(get_layer(client, "parcels", z, x, y, who, county))[identity(0, 0)]["properties"]
         for who in ("public", "viewer", "analyst")}
    assert "owner_name" not in p["public"] and "tax_per_mu" not in p["public"]
    assert p["viewer"]["owner_name"] == "企业0-0有限公司" and "tax_per_mu" not in p["viewer"]
    assert p["analyst"]["tax_per_mu"] == TAX["C"]


def test_region_scoped_key_sees_only_its_township(client, county):
    # z12 tile holding both townships
    z = 12
    x, y = tile_of(0, 0, z)
    assert tile_of(7, 4, z) == (x, y)
    everyone = features_in(get_layer(client, "parcels", z, x, y, "analyst", county))
    t2 = features_in(get_layer(client, "parcels", z, x, y, "analyst_t2", county))
    assert {f["properties"]["township"] for f in everyone.values()} == {T1, T2}
    assert t2 and {f["properties"]["township"] for f in t2.values()} == {T2}
    assert len(t2) == sum(1 for f in everyone.values() if f["properties"]["township"] == T2)
    # a tile that only holds T1 land is empty for the T2 key
    x1, y1 = tile_of(0, 0, 17)
    assert get_layer(client, "parcels", 17, x1, y1, "analyst_t2", county).status_code == 204


def test_empty_tiles_are_204_and_errors_are_actionable(client):
    assert client.get("/tiles/parcels/15/0/0.pbf").status_code == 204
    assert client.get("/tiles/sublots/3/6/3.pbf").status_code == 204  # below minzoom
    assert client.get("/tiles/parcels/3/0/0.pbf").status_code == 204  # an overview tile with no land
    r = client.get("/tiles/nosuch/15/0/0.pbf")
    assert r.status_code == 404 and "parcels" in r.json()["description"]
    r = client.get("/tiles/parcels/2/9/0.pbf")
    assert r.status_code == 404 and "0 to 3" in r.json()["description"]


def test_low_zoom_simplifies_and_drops_specks(client, county):
    # z12: the 900 m² independent de-facto piece is ~1/4 pixel wide — still ≥ the speck threshold?
    z = 10
    x, y = tile_of(0, 0, z)
    feats = features_in(get_layer(client, "parcels", z, x, y))
    assert identity(0, 0) in feats  # 8000 m² survive at z10
    assert county.attached not in feats  # 800 m², 10 m wide: a speck at z10
    hi = features_in(get_layer(client, "parcels", 17, *tile_of(0, 4, 17)))
    assert county.attached in hi


def _overview(r) -> list[dict]:
    assert r.status_code == 200, (r.status_code, r.text)
    (name, lay), = decode(r.content).items()
    assert name == "parcels"
    return lay["features"]


def test_overview_tiles_colour_the_county_at_every_low_zoom(client, county):
    """z0–9: parcels aggregated by grade (one screen pixel cells), so the county is drawn when a
    map opens below zoom 10; grades are those of the run shown, the region scope holds."""
    eng = sa.create_engine(county.url)
    with eng.connect() as conn:
        by_town = {t: set(gs) for t, gs in conn.execute(sa.text(
            "SELECT p.township, array_agg(DISTINCT coalesce(r.grade, '')) FROM parcels p LEFT JOIN parcel_ratings r "
            "ON r.identity_code = p.identity_code AND r.run_id = :run GROUP BY 1"), {"run": county.runs["2024"]})}
        n_parcels = conn.execute(sa.text("SELECT count(*) FROM parcels")).scalar()
    eng.dispose()
    for z in range(0, 10):
        x, y = tile_of(2, 2, z)
        feats = _overview(get_layer(client, "parcels", z, x, y))
        # few features whatever the parcel count: one per (grade, township, industry group)
        assert 0 < len(feats) <= 4 * 2 * 3, (z, len(feats))
        got = {}
        for f in feats:
            p = f["properties"]
            # (an ungraded piece has no grade/colour: MVT leaves NULL properties out)
            assert set(p) >= {"township", "n", "area_mu"} and "identity_code" not in p
            assert ("grade" in p) == ("colour" in p)
            assert "tax_per_mu" not in p and "owner_name" not in p
            got.setdefault(p["township"], set()).add(p.get("grade", ""))
        # each cell shows its dominant grade: the township's grades, several of them at z9
        assert set(got) == set(by_town)
        for t, gs in got.items():
            assert gs <= by_town[t]
            if z == 9:
                assert len(gs) >= 3, (t, gs, by_town[t])
        if z <= 7:  # the whole county in one tile: every parcel counted once
            assert sum(f["properties"]["n"] for f in feats) == n_parcels
    # the 2022 run's grades, and a township-scoped key sees its township only
    x, y = tile_of(2, 2, 9)
    def by_grade(feats):
        out = {}
        for f in feats:
            out[f["properties"].get("grade")] = out.get(f["properties"].get("grade"), 0) + f["properties"]["n"]
        return out
    # the run asked for: the newer 2024 draft (an analyst may open it) says A everywhere
    draft = by_grade(_overview(get_layer(client, "parcels", 9, x, y, "analyst", county, run=county.runs["2024draft"])))
    assert "A" in draft and set(draft) <= {"A", None}, draft
    assert set(by_grade(_overview(get_layer(client, "parcels", 9, x, y)))) > {"A", None}
    assert get_layer(client, "parcels", 9, x, y, year=1990).status_code == 404
    scoped = _overview(get_layer(client, "parcels", 9, x, y, "analyst_t2", county))
    assert {f["properties"]["township"] for f in scoped} == {T2}
    assert client.get("/tiles/parcels.json").json()["minzoom"] == 0


def test_etag_and_cache_control(client, county):
    z = 15
    x, y = tile_of(0, 0, z)
    r = client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf")
    etag = r.headers["etag"]
    assert r.headers["cache-control"].startswith("public")
    assert client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", headers={"If-None-Match": etag}).status_code == 304
    keyed = client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", headers=county.headers("analyst"))
    assert keyed.headers["etag"] != etag and keyed.headers["cache-control"].startswith("private")
    eng = sa.create_engine(county.url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE data_version SET version = version + 1"))
    eng.dispose()
    r2 = client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", headers={"If-None-Match": etag})
    assert r2.status_code == 200 and r2.headers["etag"] != etag


def test_tilejson(client, county):
    r = client.get("/tiles/parcels.json", params={"year": 2024})
    assert r.status_code == 200
    tj = r.json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"][0].endswith("/tiles/parcels/{z}/{x}/{y}.pbf?year=2024")
    w, s, e, n = tj["bounds"]
    assert LON0 - 1e-6 <= w < e and LAT0 - 1e-6 <= s < n < LAT0 + 0.01
    assert tj["minzoom"] <= 12 <= tj["maxzoom"]
    vl, = tj["vector_layers"]
    assert vl["id"] == "parcels" and vl["fields"]["grade"] == "String" and "tax_per_mu" not in vl["fields"]
    a = client.get("/tiles/parcels.json", params={"api_key": county.keys["analyst_t2"]}).json()
    assert a["vector_layers"][0]["fields"]["tax_per_mu"] == "Number"
    assert "api_key=" in a["tiles"][0]
    assert a["bounds"][0] > w + 0.003  # T2 starts 4 columns + 300 m east
    assert client.get("/tiles/nosuch.json").status_code == 404
    assert client.get("/tiles/parcels.json", params={"year": 1990}).status_code == 404


# --------------------------------------------------------------------------- the lead's sample county


def test_sample_county_tiles_archives_and_styles(county_db_url):
    """Smoke over the realistic sample county (imported, matched, evaluated by the pipeline)."""
    eng = sa.create_engine(county_db_url)
    with eng.connect() as conn:
        code, lon, lat, grade = conn.execute(sa.text(
            "SELECT p.identity_code, ST_X(ST_PointOnSurface(p.geom)), ST_Y(ST_PointOnSurface(p.geom)), r.grade "
            "FROM parcels p JOIN parcel_ratings r ON r.identity_code = p.identity_code "
            "AND r.run_id = (SELECT max(id) FROM evaluation_runs WHERE status = 'published') "
            "WHERE r.grade IS NOT NULL ORDER BY p.identity_code LIMIT 1")).one()
        scheme = conn.execute(sa.text(
            "SELECT scheme FROM evaluation_runs WHERE status = 'published' ORDER BY year DESC, id DESC LIMIT 1")).scalar()
    eng.dispose()
    with TestClient(create_app(database_url=county_db_url)) as c:
        x, y = lonlat_to_tile(lon, lat, 16)
        feats = features_in(c.get(f"/tiles/parcels/16/{x}/{y}.pbf"))
        assert feats[code]["id"] == feature_id(code) and feats[code]["properties"]["grade"] == grade
        a = c.get(f"/parcels/{code}").json()
        assert a["identity_code"] == code and a["ratings"][-1]["grade"] == grade
        style = c.get("/styles/parcels/maplibre.json").json()
        match = next(layer for layer in style["layers"] if layer["type"] == "fill")["paint"]["fill-color"]
        colours = {g: v["hex"].lower() for g, v in (scheme.get("colours") or {}).items()}
        assert colours and dict(zip(match[2:-1:2], match[3:-1:2])) == colours


def test_tiles_rendered_once_identical_and_invalidated_by_data_version(client, county):
    """tile_cache (app.cache): the cached tile is byte-identical to rendering it again, and a data
    change (data version bump) is drawn at once — never the cached tile of an older version."""
    from app.api.tiles import LAYERS as TL
    from app.api.tiles import build_pyramid, render_tile
    from app.auth import Principal

    z = 15
    x, y = tile_of(0, 0, z)
    eng = sa.create_engine(county.url)
    first = get_layer(client, "parcels", z, x, y)
    second = get_layer(client, "parcels", z, x, y)
    with eng.connect() as conn:
        row = conn.execute(sa.text("SELECT data_version, mvt FROM tile_cache WHERE layer = 'parcels' AND z = :z "
                                   "AND x = :x AND y = :y AND scope LIKE 'public|%'"), {"z": z, "x": x, "y": y}).one()
        dynamic = bytes(render_tile(conn, TL["parcels"], Principal("public"), z, x, y, None, None).mvt)
    assert first.content == second.content == bytes(row.mvt) == dynamic
    assert first.headers["etag"] == second.headers["etag"]
    # the same through a server that renders every tile (settings.tile_cache off)
    from app.settings import Settings

    with TestClient(create_app(Settings(tile_cache=False), database_url=county.url)) as dyn:
        d = dyn.get(f"/tiles/parcels/{z}/{x}/{y}.pbf")
        assert d.content == first.content and d.headers["etag"] == first.headers["etag"]
        assert dyn.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", headers={"If-None-Match": d.headers["etag"]}).status_code == 304
    # a keyed caller is its own scope class: other properties, its own row
    analyst = get_layer(client, "parcels", z, x, y, "analyst", county)
    assert "tax_per_mu" in features_in(analyst)[identity(0, 0)]["properties"]
    assert "tax_per_mu" not in features_in(second)[identity(0, 0)]["properties"]
    # change a grade the way a write does (with a version bump): the next tile shows it
    run = county.runs["2024"]
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'A' WHERE identity_code = :c AND run_id = :r"),
                     {"c": identity(0, 0), "r": run})
        conn.execute(sa.text("UPDATE data_version SET version = version + 1"))
    try:
        after = get_layer(client, "parcels", z, x, y)
        assert features_in(after)[identity(0, 0)]["properties"]["grade"] == "A"
        assert after.headers["etag"] != first.headers["etag"]
        # the pre-built pyramid: every tile with data, z0–16, then served from the table
        stats = build_pyramid(eng, maxzoom=16)
        assert stats["tiles"] + stats["skipped"] > 17 and stats["bytes"] > 0
        again = build_pyramid(eng, maxzoom=16)
        assert again["tiles"] == 0 and again["skipped"] == stats["tiles"] + stats["skipped"]
        for zz in (5, 9, 12, 16):
            tx, ty = tile_of(2, 2, zz)
            served = get_layer(client, "parcels", zz, tx, ty)
            with eng.connect() as conn:
                fresh = render_tile(conn, TL["parcels"], Principal("public"), zz, tx, ty, None, None).mvt
            assert served.status_code == 200 and served.content == bytes(fresh)
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE parcel_ratings SET grade = 'C' WHERE identity_code = :c AND run_id = :r"),
                         {"c": identity(0, 0), "r": run})
            conn.execute(sa.text("UPDATE data_version SET version = version + 1"))
        eng.dispose()


def test_tiles_without_a_writable_cache_are_still_served(county):
    """A database role that may only read (a read-only replica, no INSERT on tile_cache): tiles are
    rendered on every request, the same bytes — never a 500."""
    eng = sa.create_engine(county.url)
    role = f"tiles_ro_{uuid.uuid4().hex[:6]}"
    with eng.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'ro'"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(sa.text(f"REVOKE CREATE ON SCHEMA public FROM {role}"))
    ro_url = sa.make_url(county.url).set(username=role, password="ro").render_as_string(hide_password=False)
    z = 15
    x, y = tile_of(1, 1, z)
    try:
        with TestClient(create_app(database_url=ro_url)) as ro:
            a = ro.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", params={"year": 2023})
            b = ro.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", params={"year": 2023})
        with TestClient(create_app(database_url=county.url)) as rw:
            c = rw.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", params={"year": 2023})
        assert a.status_code == b.status_code == c.status_code == 200
        assert a.content == b.content == c.content
    finally:
        db._cached_engine.cache_clear()
        with eng.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        eng.dispose()
