"""All configuration in one place (environment variables prefixed ``MUJUN_``, or a ``.env`` file).

``DATABASE_URL`` (without prefix, as every PaaS sets it) points to an existing PostGIS ≥ 3.1;
without it mujun runs its own embedded PostgreSQL + PostGIS cluster under ``MUJUN_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository (or installed package) root: the embedded cluster lives below it by default.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """mujun settings. Every field can be set as ``MUJUN_<NAME>`` (``DATABASE_URL`` also bare)."""

    model_config = SettingsConfigDict(env_prefix="MUJUN_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "MUJUN_DATABASE_URL"),
        description="SQLAlchemy URL of an external PostGIS; unset = embedded cluster",
    )
    data_dir: Path = Field(default=PROJECT_ROOT / "var", description="embedded cluster, reports, caches")
    db_port: int | None = Field(default=None, description="embedded cluster port; unset = a free port")
    db_name: str = "mujun"
    db_user: str = "mujun"
    pg_bindir: Path | None = Field(default=None, description="PostgreSQL binaries; unset = newest found")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(default=None, description="base URL in links; unset = from the request")

    #: What callers without an API key get: ``public`` (geometry and tiers) or ``none``.
    anonymous_role: str = "public"
    #: Items paging: QGIS reads both from the OpenAPI document.
    default_limit: int = 1000
    max_limit: int = 10000

    #: Web map basemap: XYZ/WMTS raster URL template(s) with {z}/{x}/{y}, several joined by ``|``
    #: (e.g. 天地图 vec_w + cva_w with your tk); unset = no basemap (works offline). Set
    #: ``basemap_gcj02`` for Amap/Tencent-style GCJ-02 tiles: the map then shifts the basemap by the
    #: GCJ-02 offset at the view centre so it lines up with the CGCS2000 parcels (see app/api/web.py).
    basemap_url: str | None = None
    basemap_gcj02: bool = False

    #: Postgres statement timeout for API queries (ms): one request cannot exhaust the server.
    statement_timeout_ms: int = 15000
    #: OGC API Features: gzip level for feature responses (0 = never), rows per streamed chunk,
    #: rows per FlatGeobuf export chunk, cached counts/extents (per data version).
    features_gzip_level: int = 1
    features_stream_rows: int = 500
    features_fgb_chunk_rows: int = 5000
    features_cache_entries: int = 4096
    #: Vector tiles rendered once per data version and kept in ``tile_cache`` (app.cache); off:
    #: every tile is rendered from the tables (the benchmark's dynamic path).
    tile_cache: bool = True
    #: Publishing a run or importing land renders the public tile pyramid and the feature cache at
    #: once (app.render: only tiles touched by changed features); off: rendered on first request.
    render_at_publish: bool = True
    #: Items pages, single features and GeoJSON exports read the GeoJSON rendered once per data
    #: version (``feature_cache``, app.feature_cache) where it answers the request; off: every
    #: feature is rendered from the tables (the dynamic path, byte-identical).
    feature_cache: bool = True
    pool_size: int = 8
    #: Seconds a request waits for a free pooled connection before a 503 Busy (with Retry-After).
    pool_timeout_s: float = 2.0
    #: The county publishes land–enterprise links: callers without a key then see enterprise
    #: identities (USCC, name) and links (roles, shares). Off by default (app/auth.py, FIELD_LEVELS).
    publish_links: bool = False
    #: Seconds a second import into the same county waits for the first (then it is refused).
    lock_wait_s: float = 600.0

    #: Web sign-in (app/accounts.py): the secret that signs session cookies (unset = one made once
    #: and kept in ``data_dir/session_secret``), how long a session lasts (s), HTTPS-only cookies.
    session_secret: str | None = None
    session_max_age_s: int = 8 * 3600
    cookie_secure: bool = False
    #: Browser uploads (app/api/workflow.py): the largest bundle accepted (MB).
    upload_max_mb: int = 2048

    #: Spatial pipeline tolerances (metres) and the small-piece threshold (亩).
    snap_tolerance_m: float = 30.0
    attach_tolerance_m: float = 5.0
    small_piece_mu: float = 1.0
    overlap_tolerance_m2: float = 1.0
    #: Yearly land deliveries (app/ingest.py, spatial/lineage.py): a complete delivery that would
    #: retire more than this share of the county's land area (absent pieces) is refused unless
    #: confirmed (``--allow-retire``); the noise band (m) within which a piece is unchanged.
    retire_max_share: float = 0.2
    land_tolerance_m: float = 0.05

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "pg"


@lru_cache
def get_settings() -> Settings:
    return Settings()
