"""``mujun evaluate``: one year's dual rating (经营主体等级 and 宗地等级) as an immutable run.

Builds the scoring engine's inputs from the database — enterprises with their merged land
(一企多地合并) and the year's metrics; parcels with everything apportioned to them — runs
``scoring.evaluate`` for both, adds the multi-year results (consecutive D years, 差别电价 and its
refund, 低产田) from the runs shown for earlier years, and stores everything under a new run.
Runs are never overwritten: publishing one makes it the one shown for its year.

Year Y reads its own land (issue 10): the land valid in Y (:func:`app.api.layers.land_in_year_sql`)
and the links, merged land and apportioned figures ``mujun match`` computed for Y — so a later
land delivery leaves Y's inputs, its run hash and its results as they were.

Each county is rated as its own unit (issue 16): the 亩均论英雄 办法 are county-level 综合评价, so
baselines and ranks are taken within a county and industry group (docs/domain.md). A database
written by a province run (:mod:`app.province_db`) holds many counties: ``enterprises.county`` and
``parcels.county`` (6-digit 县级行政区划代码, migration 0009) say which, and
:func:`county_ratings` rates each county apart, as the province run's rate step does — so
re-evaluating a province database gives the province run's grades. A county import leaves the
column NULL: a database with one county (NULL, or one code) is one unit, rated exactly as before.

The stored form of a rating is built in one place, shared with the province run
(:mod:`app.province`, :mod:`app.province_db`): :func:`rating_rows` (a subject's row from
``scoring.evaluate``'s output), :func:`multiyear_rows` (the multi-year results from
:func:`rating_history`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from app import db, store
from app.models import METRIC_COLUMNS, evaluation_runs
from scoring import countable_land, evaluate, explain_text, load_scheme, multiyear_status, run_fingerprint, scheme_hash
from scoring.scheme import Scheme

_METRICS_SQL = ", ".join(f"m.{c}" for c in METRIC_COLUMNS)
#: Rating columns stored as JSON (JSONB in the database; JSON text in a province run's Parquet).
JSON_COLUMNS = ("indicators", "adjustments", "explanation", "warnings")


@dataclass
class RunReport:
    run_id: int
    year: int
    scheme: str
    run_hash: str
    reused: bool
    enterprises: int
    parcels: int
    grades: dict[str, dict[str, int]]


def enterprise_subjects(conn: sa.Connection, year: int) -> pd.DataFrame:
    """Enterprises with a metrics row for ``year``: merged land, land class, landlord (for
    tenants), ``county`` (NULL: the database's one county).

    A tenant's landlord is the holder of the land it rents most of; for an enterprise with a
    county, of the land of its county only — the unit it is rated in, where a landlord can be
    merged with or followed (as the province run's rate step, :func:`app.province._ratings`)."""
    from app.api.layers import land_in_year_sql  # here: the province run's workers import this module

    return store.read_frame(conn, f"""
        WITH landlord AS (
            SELECT DISTINCT ON (t.uscc) t.uscc, l.uscc AS landlord_id
            FROM land_links t
            JOIN land_links l ON l.identity_code = t.identity_code AND l.uscc <> t.uscc AND l.year = t.year
                             AND l.role IN ('landlord', 'owner_occupier')
            LEFT JOIN enterprises te ON te.uscc = t.uscc
            WHERE t.role = 'tenant' AND t.year = :year
              AND (te.county IS NULL OR EXISTS (SELECT 1 FROM {land_in_year_sql()} lp
                                                WHERE lp.identity_code = t.identity_code AND lp.county = te.county))
            ORDER BY t.uscc, t.attributed_area_m2 DESC NULLS LAST, l.uscc)
        SELECT e.uscc AS subject_id, e.industry_code, e.scale, e.flags, e.founded, e.township, e.county,
               coalesce(el.land_area_mu, 0) AS land_area_mu, coalesce(el.land_class, 'none') AS land_class,
               coalesce(el.land_class = 'III', false) AS is_tenant, ll.landlord_id, {_METRICS_SQL}
        FROM enterprises e
        JOIN metrics m ON m.uscc = e.uscc AND m.year = :year
        LEFT JOIN enterprise_land el ON el.uscc = e.uscc AND el.year = :year
        LEFT JOIN landlord ll ON ll.uscc = e.uscc
        ORDER BY e.uscc""", {"year": year})


def parcel_subjects(conn: sa.Connection, year: int) -> pd.DataFrame:
    """Every piece of land with the year's apportioned figures; its industry and scale are its
    main occupant's (largest share); land nobody uses is ``idle`` (闲置); ``county`` (NULL: the
    database's one county)."""
    from app.api.layers import land_in_year_sql  # here: the province run's workers import this module

    return store.read_frame(conn, f"""
        SELECT p.identity_code AS subject_id, p.area_mu AS land_area_mu, p.township, p.county,
               occ.industry_code, coalesce(occ.scale, '规下') AS scale, (occ.uscc IS NULL) AS idle,
               {_METRICS_SQL.replace('m.', 'pm.')}
        FROM {land_in_year_sql()} p
        LEFT JOIN parcel_metrics pm ON pm.identity_code = p.identity_code AND pm.year = :year
        LEFT JOIN LATERAL (
            SELECT e.uscc, e.industry_code, e.scale FROM land_links l JOIN enterprises e ON e.uscc = l.uscc
            WHERE l.identity_code = p.identity_code AND l.year = :year
            ORDER BY l.share DESC NULLS LAST, l.uscc LIMIT 1) occ ON TRUE
        ORDER BY p.identity_code""", {"year": year})


def evaluate_year(engine: sa.Engine, year: int, scheme: str | Scheme = "zhejiang_default", *,
                  publish: bool = False, force: bool = False, progress=None) -> RunReport:
    """Rate enterprises and parcels for ``year`` under a scheme (a preset name or a YAML path).

    Each county is rated as its own unit (:func:`county_ratings`); a database of one county
    (every county import: ``county`` NULL) is one unit. The same inputs and scheme give the same
    ``run_hash`` and the same results (the inputs include the county of each subject where there
    are several); unless ``force``, an existing run with that hash is returned instead of a
    duplicate.

    >>> report = evaluate_year(db.engine(), 2024, "zhenhai_4", publish=True)   # doctest: +SKIP
    """
    sch = scheme if isinstance(scheme, Scheme) else load_scheme(scheme)
    _progress(progress, "loading inputs")
    with engine.connect() as conn:
        _require_matched_land(conn, year)
        ents = enterprise_subjects(conn, year)
        prev_ents = enterprise_subjects(conn, year - 1)
        parcels = parcel_subjects(conn, year)
        prev_parcels = parcel_subjects(conn, year - 1)
        history = rating_history(conn, year)
    if len(ents) == 0:
        raise ValueError(f"no metrics for {year} in the database: import a bundle with metrics for {year} "
                         "(`mujun import DIR`), then run `mujun match`")
    prev_ents = prev_ents if len(prev_ents) else None
    prev_parcels = prev_parcels if prev_parcels["tax_paid"].notna().any() else None
    ent_fp = run_fingerprint(ents, sch, year, previous=prev_ents, kind="enterprise")
    par_fp = run_fingerprint(parcels, sch, year, previous=prev_parcels, kind="parcel")
    counties = _county_digest(ents, prev_ents, parcels, prev_parcels)  # "" for one county: the hash as before
    inputs_fp = hashlib.sha256(f"{ent_fp}|{par_fp}|{_history_digest(history)}{counties}".encode()).hexdigest()
    run_hash = hashlib.sha256(f"{scheme_hash(sch)}|{year}|{inputs_fp}".encode()).hexdigest()

    if not force:
        with engine.connect() as conn:
            existing = conn.execute(sa.select(evaluation_runs.c.id).where(
                evaluation_runs.c.run_hash == run_hash, evaluation_runs.c.status.in_(["draft", "published"]))
                .order_by(evaluation_runs.c.id.desc())).scalar()
        if existing:
            if publish:
                publish_run(engine, existing, progress=progress)
            return _report(engine, existing, year, sch, run_hash, reused=True)

    _progress(progress, f"scoring {len(ents)} enterprises")
    ent_rows = county_ratings(ents, sch, year, previous=prev_ents, kind="enterprise")
    _progress(progress, f"scoring {len(parcels)} parcels")
    par_rows = county_ratings(parcels, sch, year, previous=prev_parcels, kind="parcel")
    ent_rows, par_rows = multiyear_rows(ent_rows, par_rows, ents, history, sch, year)

    _progress(progress, "storing the run")
    from app import render

    with render.changes(engine, progress=progress), engine.begin() as conn:
        run_id = conn.execute(evaluation_runs.insert().values(
            year=year, scheme_name=sch.name, scheme_version=str(sch.version), scheme_hash=scheme_hash(sch),
            inputs_fingerprint=inputs_fp, run_hash=run_hash, status="running",
            scheme=_scheme_json(sch),
        ).returning(evaluation_runs.c.id)).scalar_one()
        # year: the rating tables' partition key (migration 0007)
        store.replace_all(conn, "enterprise_ratings", ent_rows.assign(run_id=run_id, year=year),
                          where=f"run_id = {run_id}")
        store.replace_all(conn, "parcel_ratings", par_rows.assign(run_id=run_id, year=year),
                          where=f"run_id = {run_id}")
        summary = {"enterprises": _grade_counts(ent_rows), "parcels": _grade_counts(par_rows)}
        conn.execute(evaluation_runs.update().where(evaluation_runs.c.id == run_id).values(
            status="draft", finished_at=sa.func.now(), summary=summary))
        db.bump_data_version(conn)
        db.audit(conn, "cli", "evaluate", "evaluation_runs", str(run_id),
                 {"year": year, "scheme": sch.name, "run_hash": run_hash})
    if publish:
        publish_run(engine, run_id, progress=progress)
    return _report(engine, run_id, year, sch, run_hash, reused=False)


def publish_run(engine: sa.Engine, run_id: int, actor: str = "cli", *, progress=None,
                background: bool = False, settings=None) -> None:
    """Make a run the one shown for its year; the previously published one is superseded.

    Then the public tiles and the feature cache are rendered for it (:func:`app.render.changes`:
    only tiles touched by changed features; ``progress(text)`` hears about it in Chinese;
    ``background``: in a thread, for a web request)."""
    from app import render

    with render.changes(engine, settings=settings, progress=progress, background=background), \
            engine.begin() as conn:
        row = conn.execute(sa.select(evaluation_runs.c.year, evaluation_runs.c.status)
                           .where(evaluation_runs.c.id == run_id)).first()
        if row is None:
            raise ValueError(f"no run {run_id}: `mujun runs` lists them")
        if row.status not in ("draft", "published"):
            raise ValueError(f"run {run_id} is {row.status}; only a finished draft can be published")
        conn.execute(evaluation_runs.update().where(
            evaluation_runs.c.year == row.year, evaluation_runs.c.status == "published",
            evaluation_runs.c.id != run_id).values(status="superseded"))
        conn.execute(evaluation_runs.update().where(evaluation_runs.c.id == run_id)
                     .values(status="published", published_at=sa.func.now()))
        db.bump_data_version(conn)
        db.audit(conn, actor, "publish", "evaluation_runs", str(run_id), {"year": row.year})


# -- steps ---------------------------------------------------------------------------------------
def _require_matched_land(conn: sa.Connection, year: int) -> None:
    """Refuse to rate ``year`` on links older than its land: a land delivery for ``year`` (or an
    earlier year whose land ``year`` still reads) that changed land after the last ``mujun match``
    would otherwise leave new pieces unlinked and merged land stale — wrong grades, silently.
    A later year's delivery does not touch ``year``'s land, so it does not block it.

    Raises ``ValueError`` (in Chinese) naming the year and the delivery.
    """
    row = conn.execute(sa.text("""
        SELECT b.id, b.land_year FROM import_batches b
        WHERE b.status = 'loaded' AND b.land_year IS NOT NULL
          AND b.land_year <= greatest(:y, (SELECT min(valid_from) FROM parcels WHERE valid_from > 0))
          AND b.finished_at > coalesce((SELECT max(at) FROM audit_log WHERE action = 'match'), '-infinity')
          AND coalesce((b.counts -> 'parcels' ->> 'inserted')::int, 0)
              + coalesce((b.counts -> 'parcels' ->> 'updated')::int, 0) > 0
        ORDER BY b.id DESC LIMIT 1"""), {"y": year}).first()
    if row is not None:
        raise ValueError(f"{year} 年所用的土地在上次地企匹配之后有新的交付（导入批次 {row.id}，{row.land_year} 年）："
                         f"请先运行 `mujun match`，再评价 (land changed after the last match)")


def _progress(progress, text: str) -> None:
    if progress:
        progress(text)


def rating_history(conn: sa.Connection, year: int, *, usccs: list[str] | None = None,
                   identity_codes: list[str] | None = None) -> pd.DataFrame:
    """Grades of years before ``year`` from the run shown for each year (multi-year rules read
    these): ``subject_id`` (``E:`` + USCC, ``P:`` + 宗地身份码), ``year``, ``grade``,
    ``tax_per_mu`` (万元/亩), ``electricity_kwh`` (kWh, enterprises).

    ``usccs`` / ``identity_codes``: only these subjects (both or neither; a province run reads
    each county's), else every subject. The rules are per subject, so a subset's rows are the
    whole history's rows of those subjects."""
    from app.api.layers import SHOWN_RUNS_SQL  # here: the province run's workers import this module

    if (usccs is None) != (identity_codes is None):
        raise ValueError("rating_history: give both usccs and identity_codes, or neither")
    some = usccs is not None
    return store.read_frame(conn, f"""
        WITH shown AS (SELECT id, year FROM ({SHOWN_RUNS_SQL}) s WHERE year < :y)
        SELECT 'E:' || r.uscc AS subject_id, s.year, r.grade, r.tax_per_mu, m.electricity_kwh
        FROM shown s JOIN enterprise_ratings r ON r.run_id = s.id
        LEFT JOIN metrics m ON m.uscc = r.uscc AND m.year = s.year
        {"WHERE r.uscc = ANY(:u)" if some else ""}
        UNION ALL
        SELECT 'P:' || r.identity_code, s.year, r.grade, r.tax_per_mu, NULL
        FROM shown s JOIN parcel_ratings r ON r.run_id = s.id
        {"WHERE r.identity_code = ANY(:p)" if some else ""}
        ORDER BY 1, 2""", {"y": year, **({"u": list(usccs), "p": list(identity_codes)} if some else {})})


def _units(subjects: pd.DataFrame | None) -> list[str | None]:
    """The counties of ``subjects`` (``county``; None = NULL, the database's one county), in
    order: None first, then the codes sorted."""
    if subjects is None or "county" not in subjects.columns:
        return [None]
    c = subjects["county"]
    return [None] * bool(c.isna().any()) + sorted(c.dropna().astype(str).unique())


def _in_county(subjects: pd.DataFrame, code: str | None) -> np.ndarray:
    if "county" not in subjects.columns:  # no column: every subject is of the one county
        return np.full(len(subjects), code is None)
    c = subjects["county"]
    return (c.isna() if code is None else c.astype("string").eq(code).fillna(False)).to_numpy(dtype=bool)


def county_ratings(subjects: pd.DataFrame, sch: Scheme, year: int, *, previous: pd.DataFrame | None = None,
                   kind: str) -> pd.DataFrame:
    """:func:`rating_rows` of ``subjects`` (rows in their order), each county rated as its own
    unit: :func:`scoring.evaluate` on the county's subjects, with its subjects of last year
    (``previous``; none if it has none) — as the province run's rate step rates each county
    (:func:`app.province._ratings`). Baselines, ranks and bands are the county's (and its
    industry groups'): the 亩均论英雄 办法 are county-level 综合评价 (docs/domain.md).

    ``county``: 6-digit 县级行政区划代码, NULL = the database's one county (also one unit). With
    one unit (or no ``county`` column) this is ``rating_rows(evaluate(subjects, …), subjects)``.
    Raises what :func:`scoring.evaluate` raises."""
    units = _units(subjects)
    if len(units) <= 1:
        return rating_rows(evaluate(subjects, sch, year, previous=previous, kind=kind), subjects, sch)
    parts = []
    for code in units:
        mine = _in_county(subjects, code)
        s = subjects[mine].reset_index(drop=True)
        prev = previous[_in_county(previous, code)].reset_index(drop=True) if previous is not None else None
        prev = prev if prev is not None and len(prev) else None
        rows = rating_rows(evaluate(s, sch, year, previous=prev, kind=kind), s, sch)
        parts.append(rows.set_axis(np.flatnonzero(mine)))
    return pd.concat(parts).sort_index().reset_index(drop=True)


def _county_digest(*frames: pd.DataFrame | None) -> str:
    """Empty when every frame is one county (the run hash as before migration 0009), else
    ``|counties:`` + sha256 of each subject's county (the split decides the results)."""
    if all(len(_units(f)) <= 1 for f in frames):
        return ""
    h = hashlib.sha256()
    for f in frames:
        if f is None:
            h.update(b"|-")
            continue
        pairs = f[["subject_id", "county"]].astype("string").fillna("").sort_values(["subject_id", "county"])
        h.update(b"|")
        h.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    return f"|counties:{h.hexdigest()}"


def _history_digest(history: pd.DataFrame) -> str:
    if len(history) == 0:
        return "-"
    h = history.sort_values(["subject_id", "year"])
    return hashlib.sha256(pd.util.hash_pandas_object(h.astype("string"), index=False).to_numpy().tobytes()).hexdigest()


def _tax_per_mu(subjects: pd.DataFrame, sch: Scheme) -> np.ndarray:
    """亩均税收 (税收还原 included), whatever indicators the scheme uses; none for land the
    scheme counts as no land (无地, below ``landless.min_mu``)."""
    tax = subjects["tax_paid"].astype("float64").fillna(0) + subjects["tax_refund"].astype("float64").fillna(0)
    tax = tax.where(subjects["tax_paid"].notna())
    land = pd.Series(countable_land(subjects["land_area_mu"], sch), index=subjects.index)
    return (tax / land.where(land > 0)).to_numpy(dtype=float, na_value=np.nan)


def rating_rows(out: pd.DataFrame, subjects: pd.DataFrame, sch: Scheme) -> pd.DataFrame:
    """The stored rating of each subject (``enterprise_ratings`` / ``parcel_ratings`` columns
    but the key, ``subject_id`` instead) from ``out``, :func:`scoring.evaluate`'s output for
    ``subjects`` (its input: ``subject_id``, ``land_area_mu`` (亩), ``tax_paid``, ``tax_refund``
    (万元), for land ``idle``), evaluated with ``explain=True`` (else ``explanation`` is ``{}``).

    Beside the grade: 亩均税收 (:func:`_tax_per_mu`), the scheme's indicator values (rounded to
    6 places), adjustments and the explanation with its Chinese ``text``
    (:func:`scoring.explain_text`); ``warnings`` empty (:func:`multiyear_rows` adds them)."""
    keys = [ind.key for lst in sch.lists for ind in lst.indicators]
    keys = list(dict.fromkeys(k for k in keys if k in out.columns))
    indicators = out[keys].astype("float64").round(6).to_dict("records") if keys else [{}] * len(out)
    explanations = out["explanation"].tolist() if "explanation" in out.columns else [{}] * len(out)
    for e in explanations:
        if isinstance(e, dict) and e:
            e["text"] = explain_text(e)
    rows = pd.DataFrame({
        "subject_id": out["subject_id"].to_numpy(),
        "list_name": out["list_name"].to_numpy(),
        "industry_group": out["group"].to_numpy(),
        "evaluated": out["evaluated"].astype(bool).to_numpy(),
        "excluded_reason": out["excluded_reason"].to_numpy(),
        "score": out["score"].astype("float64").to_numpy(),
        "rank": out["rank"].astype("Int64").to_numpy(),
        "percentile": out["percentile"].astype("float64").to_numpy(),
        "band_grade": out["band_grade"].to_numpy(),
        "grade": out["grade"].to_numpy(),
        "colour": out["colour"].to_numpy(),
        "tax_per_mu": _tax_per_mu(subjects.set_index("subject_id").loc[out["subject_id"]].reset_index(), sch),
        "indicators": indicators,
        "adjustments": out["adjustments"].tolist(),
        "explanation": explanations,
        "land_area_mu": subjects.set_index("subject_id").loc[out["subject_id"], "land_area_mu"].to_numpy(dtype=float),
    })
    idle = subjects.set_index("subject_id").reindex(out["subject_id"]).get("idle")
    rows["idle"] = idle.fillna(False).astype(bool).to_numpy() if idle is not None else False
    rows["warnings"] = [[] for _ in range(len(rows))]
    return rows


def multiyear_rows(ent_rows: pd.DataFrame, par_rows: pd.DataFrame, ents: pd.DataFrame, history: pd.DataFrame,
                   sch: Scheme, year: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Consecutive D years, 差别电价 and refunds (元) for enterprises, 低产田 years for parcels,
    and their warnings, added to :func:`rating_rows`' rows of ``year`` (keys renamed ``uscc`` /
    ``identity_code``), when the scheme has a ``multiyear`` section (rules:
    :mod:`scoring.multiyear`).

    ``ents``: ``subject_id`` and ``electricity_kwh`` (kWh, the 差别电价 applies to it) of the
    enterprises; ``history``: earlier years, as :func:`rating_history` reads them."""
    if sch.multiyear is None:
        return (ent_rows.rename(columns={"subject_id": "uscc"}),
                par_rows.rename(columns={"subject_id": "identity_code"}))
    kwh = ents.set_index("subject_id")["electricity_kwh"]
    now = pd.concat([
        pd.DataFrame({"subject_id": "E:" + ent_rows["subject_id"].astype(str), "year": year,
                      "grade": ent_rows["grade"], "tax_per_mu": ent_rows["tax_per_mu"],
                      "electricity_kwh": kwh.reindex(ent_rows["subject_id"]).to_numpy()}),
        pd.DataFrame({"subject_id": "P:" + par_rows["subject_id"].astype(str), "year": year,
                      "grade": par_rows["grade"], "tax_per_mu": par_rows["tax_per_mu"], "electricity_kwh": np.nan}),
    ], ignore_index=True)
    full = pd.concat([history.astype({"year": "int64"}), now], ignore_index=True)
    full["grade"] = full["grade"].astype("string").fillna("")
    status = multiyear_status(full, sch)
    cur = status[status["year"] == year].set_index("subject_id")
    e = cur.reindex("E:" + ent_rows["subject_id"].astype(str))
    ent_rows = ent_rows.assign(
        consecutive_d_years=e["d_years"].to_numpy(),
        electricity_surcharge_yuan=(e["charge_wan"] * 1e4).round(2).to_numpy(),
        electricity_refund_yuan=(e["refund_wan"] * 1e4).round(2).to_numpy(),
    )
    ent_rows["warnings"] = [
        (["连续两年及以上D档：重点整治对象"] if bool(k) else []) for k in e["key_target"].fillna(False)]
    p = cur.reindex("P:" + par_rows["subject_id"].astype(str))
    if "low_yield_years" in p.columns:
        par_rows = par_rows.assign(low_yield_years=p["low_yield_years"].to_numpy())
        par_rows["warnings"] = [(["低产田"] if bool(x) else []) for x in p["low_yield"].fillna(False)]
    return ent_rows.rename(columns={"subject_id": "uscc"}), par_rows.rename(columns={"subject_id": "identity_code"})


def json_text(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each :data:`JSON_COLUMNS` value as the JSON text ``COPY`` writes for it
    (:func:`app.store.copy_rows`): a Parquet-safe form, stored unchanged by the database, so
    the JSONB equals what the dicts and lists would give."""
    return rows.assign(**{c: [store._cell(v) for v in rows[c]] for c in JSON_COLUMNS if c in rows.columns})


def _grade_counts(rows: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in rows["grade"].fillna("未评").value_counts().sort_index().items()}


def _scheme_json(sch: Scheme) -> dict:
    return sch.model_dump(mode="json", by_alias=True)


def _report(engine: sa.Engine, run_id: int, year: int, sch: Scheme, run_hash: str, reused: bool) -> RunReport:
    with engine.connect() as conn:
        summary = conn.execute(sa.select(evaluation_runs.c.summary).where(evaluation_runs.c.id == run_id)).scalar_one()
    return RunReport(run_id, year, sch.name, run_hash, reused,
                     sum(summary.get("enterprises", {}).values()), sum(summary.get("parcels", {}).values()),
                     summary)
