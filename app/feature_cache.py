"""Render once, serve many: each feature's GeoJSON text, rendered when data changes, read by pages.

Published data changes only when a run is published or land is imported (each write bumps the data
version, ``app.db.bump_data_version``), yet every items page used to make PostgreSQL turn geometry
and properties into GeoJSON again. :func:`build_feature_cache` renders each feature once per
collection and *visibility class* into ``feature_cache`` (migration 0006) with exactly the SQL the
dynamic path runs (``app.api.sql._feature_json``), so an items page becomes a keyset range read on
``(collection, visibility, key)`` and one ``string_agg`` (:func:`app.api.sql.cache_page_sql`).

Visibility classes come from :data:`app.auth.CONFIDENTIALITY`'s levels: ``public`` (anonymous or
``public`` keys), ``link`` (the same when the county publishes links), ``viewer`` and ``analyst``
(``admin`` sees what an analyst sees; only ``analyst`` sees drafts, so its default run may differ).
A scoped key reads its class's rows by ``Principal.region_clause`` on the stored township and
county — the same rows the dynamic path selects, so the bytes are the same.

Validity: ``feature_cache_state`` records, per (collection, class), the data version and the
evaluation run the rows were rendered at. A request is answered from the cache only when that
version is the current one and the run is the one it asks for; otherwise (and for filters, other
CRSs, ``sortby``, ``properties``, older runs) the dynamic path answers, byte for byte the same.

The build is incremental: it re-renders in SQL, writes only rows whose text, township or geometry
changed and deletes vanished ones, in one statement whose snapshot also gives the data version
recorded (a write committed meanwhile leaves the cache stale, never wrong).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa

from app import auth
from app.api import sql as fsql
from app.api.layers import LAYERS, Layer, current_run_sql

#: Visibility classes, least first (what :func:`visibility` returns).
VISIBILITY = ("public", "link", "viewer", "analyst")

_PRINCIPALS = {
    "public": auth.Principal("public"),
    "link": auth.Principal("public", publish_links=True),
    "viewer": auth.Principal("viewer"),
    "analyst": auth.Principal("analyst"),
}


def visibility(principal: auth.Principal) -> str:
    """The visibility class of a caller: which properties (and draft runs) it sees."""
    for vis in reversed(VISIBILITY):
        if principal.at_least(vis):
            return vis
    return "public"


def _classes(publish_links: bool) -> tuple[str, ...]:
    """The classes callers can have on this server (``public`` xor ``link`` for anonymous)."""
    return ("link" if publish_links else "public", "viewer", "analyst")


_BUILD = """
WITH new AS MATERIALIZED ({render}),
gone AS (
    DELETE FROM feature_cache c
    WHERE c.collection = :fc_collection AND c.visibility = :fc_visibility
      AND NOT EXISTS (SELECT 1 FROM new WHERE new.key = c.key)
    RETURNING 1),
put AS (
    INSERT INTO feature_cache AS c (collection, visibility, key, township, county, geom, feature)
    SELECT :fc_collection, :fc_visibility, key, township, county, geom, feature FROM new
    ON CONFLICT (collection, visibility, key) DO UPDATE
    SET township = EXCLUDED.township, county = EXCLUDED.county, geom = EXCLUDED.geom, feature = EXCLUDED.feature
    WHERE c.feature <> EXCLUDED.feature OR c.township IS DISTINCT FROM EXCLUDED.township
       OR c.county IS DISTINCT FROM EXCLUDED.county
       OR ST_AsEWKB(c.geom) IS DISTINCT FROM ST_AsEWKB(EXCLUDED.geom)
    RETURNING 1)
SELECT (SELECT count(*) FROM new) AS features, (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(*) FROM put) AS written,
       coalesce((SELECT version FROM data_version WHERE id = 1), 0) AS data_version,
       ({run}) AS run_now"""

_STATE = """
INSERT INTO feature_cache_state (collection, visibility, data_version, run_id, features, built_at)
VALUES (:c, :v, :dv, :run, :n, now())
ON CONFLICT (collection, visibility) DO UPDATE
SET data_version = EXCLUDED.data_version, run_id = EXCLUDED.run_id, features = EXCLUDED.features,
    built_at = EXCLUDED.built_at"""


def build_feature_cache(engine: sa.Engine, *, collections: Iterable[str] | None = None,
                        publish_links: bool | None = None) -> list[dict]:
    """Render every feature of ``collections`` (default: all layers) once per visibility class
    into ``feature_cache`` and mark each (collection, class) valid for the data version rendered.

    Call it after a run is published or land is imported (after the write's commit: it reads
    committed data). One transaction per (collection, class), serialised by an advisory lock, so
    concurrent builds and readers never see half a build. ``publish_links`` (default: the
    server's setting) decides whether anonymous callers are class ``public`` or ``link``.

    Returns one dict per (collection, class): ``collection``, ``visibility``, ``run_id``,
    ``data_version``, ``features`` (rows now cached), ``written`` (rows inserted or whose text,
    township or geometry changed), ``deleted`` (rows gone) and ``seconds``; ``data_version`` is
    None when the shown run changed during the build (then that class stays stale and the
    dynamic path answers until the next build). Raises what the database raises (e.g. a layer
    whose key is not unique: the cache is then left as it was).
    """
    if publish_links is None:
        from app.settings import get_settings

        publish_links = get_settings().publish_links
    names = list(LAYERS) if collections is None else list(collections)
    out = []
    for name in names:
        layer = LAYERS[name]
        for vis in _classes(publish_links):
            if _PRINCIPALS[vis].at_least(layer.id_level):
                out.append(_build_one(engine, layer, vis))
    if sum(b["written"] + b["deleted"] for b in out):
        # Fresh statistics before the first reader plans: with none (autovacuum analyses a minute
        # or so later), a quarter-area bbox page of 100k parcels was planned through the GiST
        # index and a sort, ~50 ms, instead of walking the key index to 1,000 hits, ~3 ms.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE feature_cache"))
    return out


def _build_one(engine: sa.Engine, layer: Layer, vis: str) -> dict:
    started = time.perf_counter()
    drafts = _PRINCIPALS[vis].sees_drafts
    run_sql = current_run_sql("fc_year", drafts)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('mujun.feature_cache'), hashtext(:k))"),
                     {"k": f"{layer.id}/{vis}"})
        run_id = conn.execute(sa.text(run_sql), {"fc_year": None}).scalar()
        render, params = fsql.render_sql(fsql.new_query(layer, _PRINCIPALS[vis], run_id))
        row = conn.execute(sa.text(_BUILD.format(render=render, run=run_sql)),
                           {**params, "fc_collection": layer.id, "fc_visibility": vis, "fc_year": None}).one()
        dv = row.data_version if row.run_now == run_id else None
        if dv is None:  # a publish between the two statements: leave this class stale
            conn.execute(sa.text("DELETE FROM feature_cache_state WHERE collection = :c AND visibility = :v"),
                         {"c": layer.id, "v": vis})
        else:
            conn.execute(sa.text(_STATE), {"c": layer.id, "v": vis, "dv": dv, "run": run_id, "n": row.features})
    return {"collection": layer.id, "visibility": vis, "run_id": run_id, "data_version": dv,
            "features": row.features, "written": row.written, "deleted": row.deleted,
            "seconds": round(time.perf_counter() - started, 3)}
