"""HTTP routers of the mujun service; :data:`ROUTERS` is what ``app.main`` mounts, in order.

Each router module adds itself here with one import line.
"""

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
from app.api.tiles import router as _tiles; ROUTERS.append(_tiles)  # noqa: E402,E702
from app.api.web import router as _web; ROUTERS.append(_web)  # noqa: E402,E702
from app.api.features import router as _features; ROUTERS.append(_features)  # noqa: E402,E702
from app.api.archives import router as _archives; ROUTERS.append(_archives)  # noqa: E402,E702
from app.api.clusters import router as _clusters; ROUTERS.append(_clusters)  # noqa: E402,E702
from app.api.styles import router as _styles; ROUTERS.append(_styles)  # noqa: E402,E702
from app.api.reports import router as _reports; ROUTERS.append(_reports)  # noqa: E402,E702
from app.api.ogc_tiles import router as _ogc_tiles; ROUTERS.append(_ogc_tiles)  # noqa: E402,E702
from app.api.docs import router as _docs; ROUTERS.append(_docs)  # noqa: E402,E702
from app.api.workflow import router as _workflow; ROUTERS.append(_workflow)  # noqa: E402,E702
