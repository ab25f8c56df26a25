"""One classification, grade → colour and label, for every style format (MapLibre, QML, SLD).

Why one module: a parcel must be the same red on the web map, in QGIS and in GeoServer. The
colours come from the evaluation scheme stored with the run (``evaluation_runs.scheme`` →
``colours: {grade: {name, hex}}`` and ``grades: [...]``, see ``scoring/scheme.py``), because
each county sets its own 预警颜色 (湖州 红橙蓝绿 four colours, 垫江 绿蓝黄橙红 five). When a run
has none, the default below applies: A 绿, B 蓝, C 橙, C- 黄, D 红, and grey for 未评级
(no rating in the run shown).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.api.layers import current_run_sql, explicit_run_sql

#: Fallback grade → (colour name, hex). Order is best → worst.
DEFAULT_COLOURS: dict[str, tuple[str, str]] = {
    "A": ("绿", "#1a9850"),
    "B": ("蓝", "#4575b4"),
    "C": ("橙", "#fdae61"),
    "C-": ("黄", "#fee08b"),
    "D": ("红", "#d73027"),
}
UNGRADED_HEX = "#bdbdbd"
UNGRADED_LABEL = "未评级 ungraded"
#: For grades a scheme names but gives no colour: a red-yellow-green ramp picked by position.
_RAMP = ("#1a9850", "#91cf60", "#4575b4", "#fee08b", "#fdae61", "#f46d43", "#d73027")


@dataclass(frozen=True)
class GradeClass:
    grade: str
    hex: str
    colour_name: str
    label: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.hex.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class Classification:
    """Ordered grade classes (best first) plus the ungraded fallback."""

    classes: tuple[GradeClass, ...]
    ungraded_hex: str = UNGRADED_HEX
    ungraded_label: str = UNGRADED_LABEL
    source: str = "default"  # "default" or "scheme <name>@<version> (run <id>)"
    field: str = "grade"

    @property
    def grades(self) -> list[str]:
        return [c.grade for c in self.classes]

    def colour_of(self, grade: str | None) -> str:
        for c in self.classes:
            if c.grade == grade:
                return c.hex
        return self.ungraded_hex

    def as_json(self) -> dict:
        return {
            "field": self.field, "source": self.source,
            "classes": [{"grade": c.grade, "colour": c.hex, "colour_name": c.colour_name, "label": c.label}
                        for c in self.classes],
            "ungraded": {"colour": self.ungraded_hex, "label": self.ungraded_label},
        }


def _rgb_hex_ok(value: object) -> bool:
    return isinstance(value, str) and len(value) == 7 and value.startswith("#") and all(
        ch in "0123456789abcdefABCDEF" for ch in value[1:])


def from_scheme(scheme: dict | None, source: str = "default") -> Classification:
    """Build the classification from a stored scheme dict (or the default when it has no colours).

    >>> from_scheme({"grades": ["A", "B", "C-", "C+", "D"],
    ...              "colours": {"A": {"name": "绿", "hex": "#1a9850"}, "D": {"name": "红", "hex": "#d7191c"}}}).grades
    ['A', 'B', 'C-', 'C+', 'D']
    >>> from_scheme(None).colour_of("D")
    '#d73027'
    """
    scheme = scheme or {}
    colours = scheme.get("colours") or {}
    grades = [str(g) for g in (scheme.get("grades") or [])] or list(colours) or list(DEFAULT_COLOURS)
    if not colours:
        source = "default"
    classes = []
    for i, g in enumerate(grades):
        spec = colours.get(g) or {}
        hex_ = spec.get("hex") if _rgb_hex_ok(spec.get("hex")) else None
        name = spec.get("name")
        if hex_ is None:
            default = DEFAULT_COLOURS.get(g)
            if default:
                name = name or default[0]
                hex_ = default[1]
            else:  # a grade the default does not know: its place on the ramp
                pos = round(i * (len(_RAMP) - 1) / max(len(grades) - 1, 1))
                hex_ = _RAMP[pos]
        name = name or ""
        classes.append(GradeClass(g, hex_.lower(), name, f"{g} {name}".strip()))
    return Classification(tuple(classes), source=source)


def for_run(conn: sa.Connection, run: int | None = None, year: int | None = None,
            drafts: bool = True) -> tuple[Classification, int | None]:
    """The classification of the run shown (explicit ``run`` id, else ``current_run_sql(year)``);
    draft runs only with ``drafts`` (callers who may review them).

    Returns ``(classification, run_id)``; ``run_id`` is ``None`` when no such run exists (then
    the default classification is returned and the caller decides whether that is an error).
    """
    if run is not None:
        row = conn.execute(sa.text(
            f"SELECT id, scheme, scheme_name, scheme_version FROM evaluation_runs "
            f"WHERE id = ({explicit_run_sql('run', drafts)})"), {"run": run}).first()
    else:
        row = conn.execute(sa.text(
            f"SELECT id, scheme, scheme_name, scheme_version FROM evaluation_runs "
            f"WHERE id = ({current_run_sql('year', drafts)})"), {"year": year}).first()
    if row is None:
        return from_scheme(None), None
    return from_scheme(row.scheme, f"scheme {row.scheme_name}@{row.scheme_version} (run {row.id})"), row.id
