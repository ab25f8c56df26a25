"""HTTP routers of the mujun service; :data:`ROUTERS` is what ``app.main`` mounts, in order.

Each router module adds itself here with one import line.
"""

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
from app.api.features import router as _features; ROUTERS.append(_features)  # noqa: E402,E702
