"""Shared geometry helpers for the pure spatial tests: a local grid in EPSG:4549 (GK 120°E)."""

from shapely.geometry import Point, box

X0, Y0 = 500_000.0, 3_320_000.0
CRS = "EPSG:4549"


def pcode(i: int) -> str:
    """A valid 宗地代码 with sequence number ``i``."""
    return f"330211001001GB{i:05d}"


def rid(i: int) -> str:
    """The identity code of registered parcel ``i``."""
    return "R-" + pcode(i)


def rect(x: float, y: float, w: float, h: float):
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def pt(x: float, y: float) -> Point:
    return Point(X0 + x, Y0 + y)
