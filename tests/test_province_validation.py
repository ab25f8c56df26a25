"""Import-validation inside the province run (issue 16): each county is checked as its own
import checks it, only its valid rows go on, and its rejects name the province file and the row
of the whole file.

A generated three-county province is written twice: clean, and dirty — the same rows with
errors injected (an enterprise with an unknown 坐标系, one with a malformed USCC, a metrics row
with a negative tax, one with text in a number column, a repeated (uscc, year), a parcel whose
outline is a line, a bow-tie parcel that make_valid repairs) — plus, in both, a tenant of county
2 leasing a parcel of county 0, which per-county validation must not reject.  The test knows
which rows it broke and which rows point at them (the cascade), and checks the rejects are
exactly those, at the right rows, that everything else reaches the pipeline as the clean
province's rows do, and that the partitioned run (2 workers) and the single process agree,
rejects included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from app.province import OUTPUTS, REJECTS, ROLES, read_county, read_outputs, run_province, run_single, \
    validate_county
from app.sample import _ProvinceWriter
from spatial.synthetic import generate_county

YEAR = 2024


def _offsets(path, role):
    meta = pq.ParquetFile(path / f"{role}.parquet").metadata
    sizes = [meta.row_group(j).num_rows for j in range(meta.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes)])


def _rewrite(src, dst, role, change):
    """Copy ``role``.parquet from ``src`` to ``dst`` row group by row group, ``change(df, i)``
    giving each county's rows (and the column types they need: text in a number column)."""
    f = pq.ParquetFile(src / f"{role}.parquet")
    writer = None
    for i in range(f.num_row_groups):
        t = f.read_row_group(i)
        df = change(t.to_pandas(), i)
        schema = t.schema
        for name in df.columns:
            if df[name].dtype == object or pd.api.types.is_string_dtype(df[name]):
                idx = schema.get_field_index(name)
                if not pa.types.is_string(schema.field(idx).type) and name != "geometry":
                    schema = schema.set(idx, pa.field(name, pa.string()))
        table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(dst / f"{role}.parquet", table.schema)
        writer.write_table(table)
    writer.close()


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    clean, dirty = root / "clean", root / "dirty"
    clean.mkdir()
    dirty.mkdir()
    cs = [generate_county(seed=13, parcels=120, index=i, enterprises_per_parcel=3) for i in range(3)]
    # a tenant of county 2 leases a parcel of county 0 (a lease the province run matches across borders)
    tenant = cs[2].enterprises["uscc"].iloc[4]
    leased = cs[0].parcels.loc[cs[0].parcels["registered"], "parcel_code"].iloc[40]
    lease = pd.DataFrame({"tenant_uscc": [tenant], "parcel_code": [leased], "landlord_uscc": [pd.NA],
                          "floor_area_m2": [900.0], "start_date": [pd.NA], "end_date": [pd.NA]})
    cs[2] = dataclasses.replace(cs[2], leases=pd.concat([cs[2].leases, lease], ignore_index=True))
    w = _ProvinceWriter(clean, "parquet")
    for c in cs:
        w.add(c)
    w.close()

    # -- the errors (positions within each county's row group) --------------------------------
    ents = {i: pq.ParquetFile(clean / "enterprises.parquet").read_row_group(i).to_pandas() for i in range(3)}
    mets = {i: pq.ParquetFile(clean / "metrics.parquet").read_row_group(i).to_pandas() for i in range(3)}
    pars = pq.ParquetFile(clean / "parcels.parquet").read_row_group(0).to_pandas()
    # enterprises with a point and figures of the year: rated in the clean province
    located = ents[1].index[ents[1]["lon"].notna() & ents[1]["uscc"].isin(mets[1].loc[mets[1]["year"] == YEAR, "uscc"])]
    bad_cs, bad_uscc = int(located[3]), int(located[7])
    once = mets[2][mets[2]["year"] == YEAR].groupby("uscc").filter(lambda g: len(g) == 1)
    rated = once[once["uscc"].isin(ents[2]["uscc"])]
    neg, text, dup = (int(rated.index[k]) for k in (2, 5, 9))
    line_parcel, bowtie_parcel = 5, 6
    assert pars["parcel_code"].iloc[line_parcel] != leased and pars["parcel_code"].iloc[bowtie_parcel] != leased

    def ents_change(df, i):
        if i == 1:
            df.loc[bad_cs, "coord_sys"] = "北京54"
            df.loc[bad_uscc, "uscc"] = "91330998MA2X"  # 12 characters: no USCC
        return df

    def mets_change(df, i):
        df["revenue"] = [None if pd.isna(v) else repr(float(v)) for v in df["revenue"]]
        if i == 2:
            df.loc[neg, "tax_paid"] = -5.0
            df.loc[text, "revenue"] = "约 300 万"
            df = pd.concat([df, df.loc[[dup]].assign(tax_paid=df.loc[dup, "tax_paid"] + 1)], ignore_index=True)
        return df

    def pars_change(df, i):
        if i == 0:
            g = shapely.from_wkb(df["geometry"].to_numpy())
            x, y = shapely.get_coordinates(g[line_parcel])[0]
            line = shapely.Polygon([(x, y), (x + 1e-4, y + 1e-4), (x + 2e-4, y + 2e-4), (x, y)])
            x0, y0, x1, y1 = shapely.bounds(g[bowtie_parcel])
            bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
            df.loc[line_parcel, "geometry"] = shapely.to_wkb(line)
            df.loc[bowtie_parcel, "geometry"] = shapely.to_wkb(bowtie)
        return df

    changes = {"enterprises": ents_change, "metrics": mets_change, "parcels": pars_change}
    for role in ROLES:
        _rewrite(clean, dirty, role, changes.get(role, lambda df, i: df))
    return {"clean": clean, "dirty": dirty, "tenant": tenant, "leased": leased,
            "bad_cs": ents[1].loc[bad_cs, "uscc"], "bad_cs_pos": bad_cs, "bad_uscc": ents[1].loc[bad_uscc, "uscc"],
            "bad_uscc_pos": bad_uscc, "neg": (mets[2].loc[neg, "uscc"], neg), "text": (mets[2].loc[text, "uscc"], text),
            "dup": (mets[2].loc[dup, "uscc"], dup, len(mets[2])), "line": (pars["parcel_code"].iloc[line_parcel], line_parcel),
            "bowtie": (pars["parcel_code"].iloc[bowtie_parcel], bowtie_parcel)}


@pytest.fixture(scope="module")
def runs(province, tmp_path_factory):
    from distributed import Client, LocalCluster

    single = run_single(province["dirty"], YEAR)
    clean = run_single(province["clean"], YEAR)
    out = tmp_path_factory.mktemp("out")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        report = run_province(province["dirty"], YEAR, out, client=client, progress=seen.append)
    return {"single": single, "clean": clean, "parted": read_outputs(out), "report": report, "seen": seen,
            "out": out}


def _row(path, role, county, pos):
    """The 1-based row of the whole province file of position ``pos`` in county ``county``."""
    return int(_offsets(path, role)[county] + pos + 1)


def _expected_errors(p) -> set[tuple[str, int]]:
    """Every (file, row) that must be rejected: the rows broken, and the rows of the same county
    pointing at a broken enterprise or parcel (the cascade)."""
    d = p["dirty"]
    out = {("enterprises.parquet", _row(d, "enterprises", 1, p["bad_cs_pos"])),
           ("enterprises.parquet", _row(d, "enterprises", 1, p["bad_uscc_pos"])),
           ("parcels.parquet", _row(d, "parcels", 0, p["line"][1]))}
    for key in ("neg", "text"):
        out.add(("metrics.parquet", _row(d, "metrics", 2, p[key][1])))
    out.add(("metrics.parquet", _row(d, "metrics", 2, p["dup"][2])))  # the appended repeat, not the first
    cascade = {"metrics": [(1, "uscc", p["bad_cs"])],
               "leases": [(1, "tenant_uscc", p["bad_cs"]), (1, "landlord_uscc", p["bad_cs"]),
                          (0, "parcel_code", p["line"][0])],
               "corrections": [(1, "uscc", p["bad_cs"]), (0, "parcel_code", p["line"][0])]}
    for role, keys in cascade.items():
        for county, col, value in keys:
            df = pq.ParquetFile(d / f"{role}.parquet").read_row_group(county).to_pandas()
            hit = df.index[df[col] == value]
            if role == "leases" and col == "landlord_uscc":
                # a lease placed by its parcel only warns about its landlord (data contract)
                hit = df.index[(df[col] == value) & df["parcel_code"].isna()]
            out |= {(f"{role}.parquet", _row(d, role, county, int(k))) for k in hit}
    return out


def test_rejects_are_exactly_the_broken_rows_and_their_cascade(province, runs):
    rej = runs["single"][REJECTS]
    errors = rej[rej["severity"] == "error"]
    got = set(zip(errors["file"], errors["row"].astype(int)))
    assert got == _expected_errors(province)
    assert len(got) > 8  # the cascade is there: metrics, leases or corrections of the broken rows


def test_rejects_name_file_row_and_field_of_the_parquet_row(province, runs):
    d = province["dirty"]
    rej = runs["single"][REJECTS]
    whole = {r: pq.read_table(d / f"{r}.parquet").to_pandas() for r in ("enterprises", "metrics", "parcels")}

    def at(file, field):
        hit = rej[(rej["file"] == file) & (rej["field"] == field) & (rej["severity"] == "error")]
        return hit

    cs = at("enterprises.parquet", "coord_sys")
    assert len(cs) == 1 and cs["county"].iloc[0] == "330998" and "未知坐标系" in cs["reason"].iloc[0]
    assert whole["enterprises"].iloc[cs["row"].iloc[0] - 1]["coord_sys"] == "北京54" == cs["value"].iloc[0]
    us = at("enterprises.parquet", "uscc")
    assert len(us) == 1 and whole["enterprises"].iloc[us["row"].iloc[0] - 1]["uscc"] == "91330998MA2X"
    neg = at("metrics.parquet", "tax_paid")
    assert len(neg) == 1 and "不能为负数" in neg["reason"].iloc[0]
    assert whole["metrics"].iloc[neg["row"].iloc[0] - 1]["tax_paid"] == -5.0
    text = at("metrics.parquet", "revenue")
    assert len(text) == 1 and "非数值" in text["reason"].iloc[0] and text["value"].iloc[0] == "约 300 万"
    assert whole["metrics"].iloc[text["row"].iloc[0] - 1]["revenue"] == "约 300 万"
    dup = at("metrics.parquet", "year")
    assert len(dup) == 1 and "重复" in dup["reason"].iloc[0]
    first = _row(d, "metrics", 2, province["dup"][1])
    assert f"第 {first} 行" in dup["reason"].iloc[0]  # names the first occurrence, as a row of the whole file
    row = whole["metrics"].iloc[dup["row"].iloc[0] - 1]
    assert row["uscc"] == province["dup"][0] and row["year"] == YEAR
    geom = at("parcels.parquet", "geometry")
    assert len(geom) == 1 and "无法修复为面" in geom["reason"].iloc[0]
    assert whole["parcels"].iloc[geom["row"].iloc[0] - 1]["parcel_code"] == province["line"][0]
    # the bow-tie is repaired (a warning) and kept
    fixed = rej[(rej["file"] == "parcels.parquet") & (rej["severity"] == "warning") & (rej["field"] == "geometry")
                & rej["reason"].str.contains("make_valid")]
    assert list(fixed["row"]) == [_row(d, "parcels", 0, province["bowtie"][1])]


def test_cross_county_lease_is_a_warning_and_is_matched(province, runs):
    d = province["dirty"]
    leases = pq.read_table(d / "leases.parquet").to_pandas()
    row = int(np.flatnonzero((leases["tenant_uscc"] == province["tenant"])
                             & (leases["parcel_code"] == province["leased"]))[0]) + 1
    rej = runs["single"][REJECTS]
    mine = rej[(rej["file"] == "leases.parquet") & (rej["row"] == row)]
    assert list(mine["severity"]) == ["warning"] and "可能属于省内其他县" in mine["reason"].iloc[0]
    links = runs["single"]["links"]
    on = links[(links["uscc"] == province["tenant"]) & (links["parcel_code"] == province["leased"])]
    assert len(on) == 1 and on["role"].iloc[0] == "tenant" and on["county"].iloc[0] == "330999"


def test_rejected_rows_are_absent_from_the_outputs(province, runs):
    for res in (runs["single"], runs["parted"]):
        ids = set(res["enterprise_ratings"]["subject_id"])
        clean_ids = set(runs["clean"]["enterprise_ratings"]["subject_id"])
        # rated in the clean province; gone with their enterprise row or their only figures of the year
        for u in (province["bad_cs"], province["bad_uscc"], province["neg"][0], province["text"][0]):
            assert u in clean_ids and u not in ids
        assert "91330998MA2X" not in set(res["links"]["uscc"])
        land = res["land"]
        assert province["line"][0] not in set(land["parcel_code"])
        bowtie = land[land["parcel_code"] == province["bowtie"][0]]
        assert len(bowtie) == 1 and shapely.is_valid(bowtie.geometry.values).all()
        assert (res["parcel_metrics"]["tax_paid"].dropna() >= 0).all()


def test_kept_rows_reach_the_pipeline_as_in_the_clean_province(province):
    """Every row not rejected has the same typed values as the same row of the clean province
    (the repaired bow-tie apart), and the repeated (uscc, year) keeps its first row."""
    c, d = province["clean"], province["dirty"]
    expected = _expected_errors(province)
    for i in range(3):
        kept, _ = validate_county(d, i)
        ref, ref_rejects = validate_county(c, i)
        assert (ref_rejects["severity"] != "error").all()
        for role in ROLES:
            a, b = ref.tables[role], kept.tables[role]
            gone = {r for f, r in expected if f == f"{role}.parquet"}
            a = a[~a["_row"].isin(gone)].reset_index(drop=True)
            assert list(b["_row"]) == list(a["_row"]), (role, i)
            cols = [x for x in a.columns if x not in ("geometry", "_file", "_row")]
            pd.testing.assert_frame_equal(pd.DataFrame(a[cols]), pd.DataFrame(b[cols]), check_dtype=False)
            if role in ("parcels", "buildings", "defacto", "enterprises"):
                same = shapely.equals_exact(a.geometry.values, b.geometry.values, 0) | (
                    shapely.is_missing(a.geometry.values) & shapely.is_missing(b.geometry.values))
                if role == "parcels" and i == 0:
                    bow = a.index[a["parcel_code"] == province["bowtie"][0]]
                    assert list(np.flatnonzero(~same)) == list(bow)
                else:
                    assert same.all(), (role, i)
    m = read_county(d, 2, 4549)["metrics"]
    u, pos, _ = province["dup"]
    row = pq.ParquetFile(c / "metrics.parquet").read_row_group(2).to_pandas().loc[pos]
    mine = m[(m["uscc"] == u) & (m["year"] == YEAR)]
    assert len(mine) == 1 and mine["tax_paid"].iloc[0] == row["tax_paid"]


def test_pipeline_frames_have_the_province_columns_only(province):
    """No validation columns (``_file``, ``_row``, ``x_*``, ``lon_src``) reach the pipeline: each
    frame has the province file's columns (enterprises: a point instead of lon/lat) and ``county``."""
    d = province["dirty"]
    data = read_county(d, 1, 4549)
    assert data["rejected"] == len(data["rejects"][data["rejects"]["severity"] == "error"]
                                   .drop_duplicates(["file", "row"]))
    for role in ROLES:
        names = pq.read_schema(d / f"{role}.parquet").names
        want = [n for n in names if n not in ("lon", "lat", "geometry")]
        if role in ("parcels", "defacto", "buildings", "enterprises"):
            want.append("geometry")
        assert list(data[role].columns) == want + ["county"], role


def test_partitioned_run_equals_single_process_rejects_included(runs):
    single, parted = runs["single"], runs["parted"]
    for table in (*OUTPUTS, REJECTS):
        a, b = single[table], parted[table]
        assert len(a) > 0 and list(a.columns) == list(b.columns), table
        if "geometry" in a.columns:
            assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()
            a, b = a.drop(columns="geometry"), b.drop(columns="geometry")
        pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True, check_dtype=False)
    # each county's rejects in its own file, as the run wrote them
    files = sorted(p.name for p in (runs["out"] / REJECTS).glob("*.parquet"))
    assert files == ["00000.parquet", "00001.parquet", "00002.parquet"]


def test_report_and_progress_count_the_rejects(province, runs):
    rej = runs["single"][REJECTS]
    errors = rej[rej["severity"] == "error"].drop_duplicates(["file", "row"])
    report = runs["report"]
    assert report.rows["rejected"] == len(errors) == len(_expected_errors(province))
    assert report.rows["warnings"] == int((rej["severity"] == "warning").sum())
    prep = {e.county: e.rows for e in runs["seen"] if e.stage == "prepare"}
    assert {c: r["rejected"] for c, r in prep.items()} == errors.groupby("county").size().reindex(
        list(prep), fill_value=0).to_dict()


def test_clean_province_has_no_error(runs):
    rej = runs["clean"][REJECTS]
    assert len(rej) > 0  # warnings (landlords who are no enterprise, owners of other counties …)
    assert (rej["severity"] == "warning").all()


def test_rejected_rows_do_not_reach_the_database(province, runs, engine):
    """``--db`` writes the county's enterprises and metrics as the run used them: no rejected
    enterprise, no rejected metrics row, and the first of a repeated (uscc, year)."""
    import sqlalchemy as sa

    from app.province_db import write_province

    w = write_province(engine, runs["out"], province["dirty"], YEAR)
    # the figures of the enterprise whose row now carries a malformed code name no enterprise of
    # the province: kept by the county's validation (a warning), not written (metrics → enterprises)
    m1 = pq.ParquetFile(province["dirty"] / "metrics.parquet").read_row_group(1).to_pandas()
    assert w.rows["metrics_without_enterprise"] == int((m1["uscc"] == province["bad_uscc"]).sum()) > 0
    with engine.connect() as conn:
        ents = set(conn.execute(sa.text("SELECT uscc FROM enterprises")).scalars())
        mets = pd.read_sql(sa.text("SELECT uscc, year, tax_paid, revenue FROM metrics WHERE year = :y"), conn,
                           params={"y": YEAR})
    assert len(ents) > 900 and province["tenant"] in ents
    assert not ents & {province["bad_cs"], province["bad_uscc"], "91330998MA2X"}
    assert province["bad_uscc"] not in ents  # its old code: the row was rejected, not renamed
    assert (mets["tax_paid"].dropna() >= 0).all()
    assert not set(mets["uscc"]) & {province["neg"][0], province["text"][0]}
    u, pos, _ = province["dup"]
    first = pq.ParquetFile(province["clean"] / "metrics.parquet").read_row_group(2).to_pandas().loc[pos]
    assert mets.loc[mets["uscc"] == u, "tax_paid"].tolist() == [first["tax_paid"]]


def test_cli_says_how_many_rows_were_rejected_and_where(province, tmp_path):
    """`mujun run --province`: the count of rejected rows and the rejects' directory, in Chinese."""
    import subprocess
    import sys
    from pathlib import Path

    mujun = Path(sys.executable).parent / "mujun"
    res = subprocess.run([str(mujun), "run", "--province", str(province["dirty"]), "--year", str(YEAR),
                          "--workers", "2", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = "".join(res.stdout.split())  # rich may wrap
    assert f"导入校验：拒收{len(_expected_errors(province))}行" in out
    assert f"见{tmp_path / 'out' / 'rejects'}/" in out
    rej = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "out" / REJECTS).glob("*.parquet"))])
    assert len(rej[rej["severity"] == "error"].drop_duplicates(["file", "row"])) == len(_expected_errors(province))
