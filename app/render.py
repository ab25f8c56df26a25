"""Render at publish and import: the public vector-tile pyramid and the GeoJSON feature cache.

Published data changes only when a run is published or land is imported, so the work of turning
geometry into MVT and GeoJSON is done then, once, instead of on every request. Usage::

    with render.changes(engine, settings=settings, progress=say) as done:
        ...                       # the write (one transaction, one data-version bump)
    # on leaving the block: the pyramid is brought to the new data version, then the feature cache

:func:`changes` takes a *fingerprint* of every feature the public tiles draw (md5 of its
geometry and of every property a tile carries, with its bounding box) before the write and after
it. Only the tiles whose bounds (with the tile buffer) meet a feature that differs — old or new
position — are rendered again (by :func:`app.api.tiles.build_pyramid`, on a few connections at
once); the other tiles of the pyramid are re-stamped for the new data version without being
rendered (their bytes cannot have changed: a tile is a function of the
features meeting it). Re-stamping is done only when the write moved the data version by exactly
one (nothing else was written in between); otherwise every tile is rendered. An import (land
changed in a few places), a draft run or a match (no public tile changes) thus renders little or
nothing; publishing a new run renders every tile again, since each feature carries the ``run_id``
of the run shown. Tiles with data that
are not in the cache yet (the first build, or land in new places) are then rendered by
:func:`app.api.tiles.build_pyramid`, which skips the current ones.

What is pre-built: layers :data:`PYRAMID_LAYERS`, zoom 0 to ``TILEJSON_MAXZOOM``, for the
anonymous caller (``settings.anonymous_role``) under the default query (no ``run``/``year``:
TileJSON, QGIS); the web map's ``?run=<shown run>`` is answered from the same rows
(``app.api.tiles.CachedTiles`` checks the row's run). Tiles of
older data versions of this scope are deleted. Keyed callers and other runs are rendered on
request and kept (:mod:`app.cache`), as before.

``settings.render_at_publish`` (``MUJUN_RENDER_AT_PUBLISH``) turns this off: tiles and features
are then rendered on first request (the test suite runs so, except the tests of this module).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import sqlalchemy as sa

from app.api import tiles
from app.api.common import principal_scope
from app.api.layers import LAYERS
from app.auth import Principal
from app.settings import Settings, get_settings

#: The layers whose public pyramid is pre-built (the others render on request).
PYRAMID_LAYERS = ("parcels",)
_DEFAULT_QUERY = "run=None&year=None"
#: Tile buffer as a share of a tile (``tiles.BUFFER / tiles.EXTENT``), plus a margin for rounding:
#: a feature this close to a tile is drawn in it (and in overview tiles, whose buffer is smaller).
_TOUCH = tiles.BUFFER / tiles.EXTENT + 0.01


def anonymous(settings: Settings) -> Principal:
    """The caller whose tiles are pre-built: the anonymous one of this server."""
    return Principal(settings.anonymous_role, publish_links=settings.publish_links)


@contextmanager
def changes(engine: sa.Engine, *, settings: Settings | None = None, progress=None, background: bool = False):
    """Around a write that bumps the data version once: afterwards bring the public pyramid and
    the feature cache to the new version (see the module docstring). Yields a dict that receives
    the statistics (``tiles``: :func:`render_pyramid`'s, ``features``: the feature cache's).

    ``progress(text)`` gets Chinese progress lines. ``background``: render in a daemon thread
    (a web request that publishes returns at once; tiles not yet rendered are rendered on
    request meanwhile, identical). Nothing is done when ``settings.render_at_publish`` is off;
    nothing after the block when it raised. A failing render never undoes the write: it is
    logged and the caches stay stale (served from the tables, identical) until the next build.
    """
    s = settings or get_settings()
    out: dict = {}
    if not s.render_at_publish:
        yield out
        return
    who = anonymous(s)
    before = {lid: snapshot(engine, lid, who) for lid in PYRAMID_LAYERS} if _pyramid_on(s, who) else {}
    yield out

    def work():
        try:
            if before:
                out["tiles"] = {lid: render_pyramid(engine, lid, who, before=before[lid], progress=progress)
                                for lid in before}
            out["features"] = _build_features(engine, s, progress)
        except Exception:  # noqa: BLE001 - the write stands; the caches stay stale, never wrong
            import logging

            logging.getLogger(__name__).exception("rendering after a write failed")
            if progress:
                progress("预渲染失败（数据已保存；地图与要素将按需生成），详见日志")

    if background:
        import threading

        threading.Thread(target=work, name="mujun-render", daemon=True).start()
    else:
        work()


def _pyramid_on(s: Settings, who: Principal) -> bool:
    return s.tile_cache and who.at_least("public")


def _build_features(engine: sa.Engine, s: Settings, progress) -> list:
    """Every collection's GeoJSON per visibility class (:mod:`app.feature_cache`, incremental)."""
    from app.feature_cache import build_feature_cache

    if progress:
        progress("预渲染要素（GeoJSON）…")
    return build_feature_cache(engine, publish_links=s.publish_links)


# --------------------------------------------------------------------------- fingerprints


def _fingerprint_sql(layer_id: str, who: Principal) -> str:
    """Per feature drawn in the caller's default tiles: key, md5 of geometry and tile properties,
    bounding box (CGCS2000 degrees)."""
    lay = LAYERS[layer_id]
    g = lay.geom_sql
    cols = [p.sql for p in tiles.visible_props(lay, who)]
    if layer_id in tiles.OVERVIEW_PROPS:  # overview tiles add up the raw 亩
        cols += [lay.prop(n).sql for n in tiles.OVERVIEW_PROPS[layer_id]] + ["p.area_mu"]
    row = ", ".join(f"({c})::text" for c in cols) or "''"
    return f"""
WITH run AS ({tiles._run_cte(False, who.sees_drafts)})
SELECT ({lay.id_sql})::text AS k,
       md5(encode(ST_AsBinary({g}), 'hex') || concat_ws('|', {row})) AS fp,
       ST_XMin({g}), ST_YMin({g}), ST_XMax({g}), ST_YMax({g})
FROM {tiles._bind_run(lay.from_sql)}
WHERE {g} IS NOT NULL AND ({lay.where_sql}) AND {who.region_clause(lay.township_sql)[0]}"""


def snapshot(engine: sa.Engine, layer_id: str, who: Principal) -> dict:
    """``{"version", "run_id", "features": {(key, fp): bbox}}`` of the data as it is now, read in
    one snapshot (REPEATABLE READ) so the version and the features agree."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        version = int(conn.execute(sa.text("SELECT coalesce((SELECT version FROM data_version WHERE id = 1), 0)"))
                      .scalar())
        run_id = conn.execute(sa.text(f"WITH run AS ({tiles._run_cte(False, who.sees_drafts)}) SELECT id FROM run"),
                              {"year": None}).scalar()
        rows = conn.execute(sa.text(_fingerprint_sql(layer_id, who)), {"year": None}).all()
        conn.rollback()
    return {"version": version, "run_id": run_id, "features": {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}}


def touched_tiles(bboxes, maxzoom: int, minzoom: int = 0) -> set[tuple[int, int, int]]:
    """Every tile (z, x, y), ``minzoom``–``maxzoom``, whose buffered bounds meet one of ``bboxes``
    (lon/lat min/max, degrees)."""
    out: set[tuple[int, int, int]] = set()
    for z in range(minzoom, maxzoom + 1):
        n = 2 ** z
        for x0, y0, x1, y1 in bboxes:
            tx0 = max(0, math.floor(_tx(x0, n) - _TOUCH))
            tx1 = min(n - 1, math.floor(_tx(x1, n) + _TOUCH))
            ty0 = max(0, math.floor(_ty(y1, n) - _TOUCH))
            ty1 = min(n - 1, math.floor(_ty(y0, n) + _TOUCH))
            out.update((z, x, y) for x in range(tx0, tx1 + 1) for y in range(ty0, ty1 + 1))
    return out


def _tx(lon: float, n: int) -> float:
    return (lon + 180.0) / 360.0 * n


def _ty(lat: float, n: int) -> float:
    lat = max(min(lat, 85.0511), -85.0511)
    return (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n


# --------------------------------------------------------------------------- the pyramid


def render_pyramid(engine: sa.Engine, layer_id: str = "parcels", who: Principal | None = None, *,
                   before: dict | None = None, maxzoom: int = tiles.TILEJSON_MAXZOOM, progress=None) -> dict:
    """Bring ``layer_id``'s pyramid for ``who`` (default: anonymous public) to the current data
    version: render the tiles touched since ``before`` (:func:`snapshot`), re-stamp the others,
    render the missing ones, delete older versions. Without ``before`` every tile is rendered (skipping current ones).

    Returns ``touched`` (tiles a changed feature meets; None without ``before``), ``restamped``,
    ``built`` (tiles rendered: the touched ones with data, and any missing), ``changed_features``,
    ``version``, ``seconds``, ``bytes`` of this scope's tiles now stored.
    """
    t0 = time.perf_counter()
    who = who or Principal("public")
    lay = LAYERS[layer_id]
    scope = principal_scope(who)
    minzoom = tiles.MINZOOM.get(layer_id, 0)
    after = snapshot(engine, layer_id, who)
    stats = {"touched": None, "restamped": 0, "built": 0, "changed_features": None, "version": after["version"]}
    say = progress or (lambda text: None)
    if before is not None and after["version"] == before["version"] + 1:
        old, new = before["features"], after["features"]
        changed = [old[k] for k in old.keys() - new.keys()] + [new[k] for k in new.keys() - old.keys()]
        stats["changed_features"] = len(changed)
        todo = touched_tiles(changed, maxzoom, minzoom)
        say(f"瓦片：{len(changed)} 个要素有变化，{len(todo)} 个瓦片须重绘，其余沿用")
        zs, xs, ys = (list(v) for v in zip(*todo)) if todo else ([], [], [])
        with engine.begin() as conn:
            # the untouched tiles of the version before are the same bytes at this one; the
            # touched ones stay behind (never served) and are rendered by build_pyramid below
            stats["restamped"] = conn.execute(sa.text(
                "UPDATE tile_cache c SET data_version = :v, run_id = :run WHERE layer = :l AND scope = :s "
                "AND query = :q AND data_version = :prev AND NOT EXISTS (SELECT 1 FROM unnest("
                "CAST(:zs AS int[]), CAST(:xs AS int[]), CAST(:ys AS int[])) t(z, x, y) "
                "WHERE t.z = c.z AND t.x = c.x AND t.y = c.y)"),
                {"v": after["version"], "run": after["run_id"], "l": layer_id, "s": scope, "q": _DEFAULT_QUERY,
                 "prev": before["version"], "zs": zs, "xs": xs, "ys": ys}).rowcount
        stats["touched"] = len(todo)

    def on_zoom(_layer, z, n):
        say(f"瓦片：第 {z} 级（{n} 个）")

    built = tiles.build_pyramid(engine, (layer_id,), maxzoom=maxzoom, who=who, progress=on_zoom)
    stats["built"] = built["tiles"]  # the touched tiles with data, and any missing one
    with engine.begin() as conn:
        # tiles of older versions are never served again: free the space
        conn.execute(sa.text("DELETE FROM tile_cache WHERE layer = :l AND scope = :s AND data_version < :v"),
                     {"l": layer_id, "s": scope, "v": after["version"]})
        stats["bytes"] = int(conn.execute(sa.text(
            "SELECT coalesce(sum(length(mvt)), 0) FROM tile_cache WHERE layer = :l AND scope = :s AND query = :q"),
            {"l": layer_id, "s": scope, "q": _DEFAULT_QUERY}).scalar())
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    say(f"瓦片：绘制 {stats['built']}，沿用 {stats['restamped']}，"
        f"{stats['bytes'] / 1e6:.1f} MB，用时 {stats['seconds']} 秒")
    return stats
