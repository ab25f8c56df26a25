"""Styles for every layer, in three encodings from ONE classification (:mod:`app.api.classification`).

``GET /styles`` — the layers and their style links.
``GET /styles/{layer}`` — the classification (grade → colour, label) and links to the encodings.
``GET /styles/{layer}/maplibre.json`` — a MapLibre GL style (v8): the layer's vector tiles as
    source (``/tiles/{layer}.json``), fill/circle colour by ``match`` on ``grade``, outline, and a
    hover highlight through ``feature-state`` (the tiles carry feature ids).
``GET /styles/{layer}.qml`` — a QGIS 3 layer style: categorized renderer on ``grade``, one
    category per grade plus the catch-all (empty value) for 未评级; load it with
    *Layer Properties → Style → Load Style* or ``layer.loadNamedStyle(path)``.
``GET /styles/{layer}.sld`` — SLD 1.1.0 / Symbology Encoding 1.1, one ``Rule`` per grade and an
    ``ElseFilter`` rule for ungraded land (GeoServer, QGIS *Load Style… SLD*).

``?run=`` / ``?year=`` choose the run whose scheme gives the colours (each county sets its own
预警颜色: 湖州 红橙蓝绿, 垫江 绿蓝黄橙红); without a run the default classification applies.

Recommended links from ``/collections/{id}`` (OGC API - Styles uses ``rel="stylesheet"``)::

    {"rel": "stylesheet", "type": "application/vnd.mapbox.style+json", "href": "/styles/parcels/maplibre.json"}
    {"rel": "stylesheet", "type": "application/vnd.qgis.qml",          "href": "/styles/parcels.qml"}
    {"rel": "stylesheet", "type": "application/vnd.ogc.sld+xml;version=1.1", "href": "/styles/parcels.sld"}
    {"rel": "http://www.opengis.net/def/rel/ogc/1.0/styles", "type": "application/json", "href": "/styles/parcels"}

(:func:`style_links` builds exactly these.)
"""

from __future__ import annotations

from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.classification import Classification, for_run
from app.api.common import RUN_QUERY, YEAR_QUERY, base_url, data_version, etag_response, json_error, json_response
from app.api.layers import LAYERS, Layer
from app.auth import Principal, principal

router = APIRouter(tags=["styles"])

MAPLIBRE = "application/vnd.mapbox.style+json"
QML = "application/vnd.qgis.qml"
SLD = "application/vnd.ogc.sld+xml;version=1.1"
OUTLINE_HEX = "#232323"
FILL_OPACITY = 0.75


def style_links(base: str, layer_id: str) -> list[dict]:
    """The links a collection (or anything else) should carry to this layer's styles."""
    return [
        {"rel": "stylesheet", "type": MAPLIBRE, "title": "MapLibre GL style", "href": f"{base}/styles/{layer_id}/maplibre.json"},
        {"rel": "stylesheet", "type": QML, "title": "QGIS layer style (QML)", "href": f"{base}/styles/{layer_id}.qml"},
        {"rel": "stylesheet", "type": SLD, "title": "SLD 1.1 / SE 1.1", "href": f"{base}/styles/{layer_id}.sld"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/styles", "type": "application/json",
         "title": "classification (grade → colour)", "href": f"{base}/styles/{layer_id}"},
    ]


def _is_point(layer: Layer) -> bool:
    return layer.geometry_type == "Point"


# --------------------------------------------------------------------------- encodings


def maplibre_style(layer: Layer, cls: Classification, tilejson_url: str) -> dict:
    """A MapLibre GL style v8 overlay for one layer (no basemap: add it in the map)."""
    match = ["match", ["coalesce", ["get", cls.field], ""]]
    for c in cls.classes:
        match += [c.grade, c.hex]
    match.append(cls.ungraded_hex)
    src = f"mujun-{layer.id}"
    hover = ["boolean", ["feature-state", "hover"], False]
    if _is_point(layer):
        layers = [{
            "id": f"{layer.id}-circle", "type": "circle", "source": src, "source-layer": layer.id,
            "paint": {"circle-color": match, "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, 2, 16, 6],
                      "circle-stroke-color": OUTLINE_HEX, "circle-stroke-width": ["case", hover, 2, 0.5]},
        }]
    else:
        layers = [
            {"id": f"{layer.id}-fill", "type": "fill", "source": src, "source-layer": layer.id,
             "paint": {"fill-color": match, "fill-opacity": ["case", hover, 0.95, FILL_OPACITY]}},
            {"id": f"{layer.id}-outline", "type": "line", "source": src, "source-layer": layer.id,
             "paint": {"line-color": OUTLINE_HEX, "line-width": ["case", hover, 2, 0.5]}},
        ]
    return {
        "version": 8,
        "name": f"mujun {layer.id} — {layer.title} by grade",
        "metadata": {"mujun:classification": cls.as_json(), "mujun:layer": layer.id},
        "sources": {src: {"type": "vector", "url": tilejson_url}},
        "layers": layers,
    }


def _rgba(hex_: str, alpha: int = 255) -> str:
    h = hex_.lstrip("#")
    return f"{int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha}"


def _qml_options(props: dict[str, str]) -> str:
    opts = "".join(f'\n            <Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>' for k, v in props.items())
    legacy = "".join(f"\n          <prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return f'\n          <Option type="Map">{opts}\n          </Option>{legacy}'


def _qml_symbol(name: str, hex_: str, point: bool) -> str:
    if point:
        cls, kind = "SimpleMarker", "marker"
        props = {"name": "circle", "color": _rgba(hex_), "outline_color": _rgba(OUTLINE_HEX),
                 "outline_style": "solid", "outline_width": "0.2", "outline_width_unit": "MM",
                 "size": "2.4", "size_unit": "MM", "angle": "0", "joinstyle": "bevel",
                 "scale_method": "diameter", "offset": "0,0", "offset_unit": "MM",
                 "horizontal_anchor_point": "1", "vertical_anchor_point": "1"}
    else:
        cls, kind = "SimpleFill", "fill"
        props = {"color": _rgba(hex_, round(255 * FILL_OPACITY)), "style": "solid",
                 "outline_color": _rgba(OUTLINE_HEX), "outline_style": "solid", "outline_width": "0.26",
                 "outline_width_unit": "MM", "joinstyle": "bevel", "offset": "0,0", "offset_unit": "MM"}
    return (f'\n      <symbol type="{kind}" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'\n        <layer class="{cls}" pass="0" locked="0" enabled="1">{_qml_options(props)}'
            f'\n        </layer>\n      </symbol>')


def qml_style(layer: Layer, cls: Classification) -> str:
    """A QGIS 3.x QML (Symbology category): categorized renderer on the grade field."""
    point = _is_point(layer)
    cats, syms = [], []
    for i, c in enumerate(cls.classes):
        cats.append(f'\n      <category value={quoteattr(c.grade)} symbol="{i}" label={quoteattr(c.label)} render="true"/>')
        syms.append(_qml_symbol(str(i), c.hex, point))
    n = len(cls.classes)
    cats.append(f'\n      <category value="" symbol="{n}" label={quoteattr(cls.ungraded_label)} render="true"/>')
    syms.append(_qml_symbol(str(n), cls.ungraded_hex, point))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        f"  <!-- mujun {escape(layer.id)}: {escape(layer.title)} by {escape(cls.field)}; "
        f"classification from {escape(cls.source)} -->\n"
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(cls.field)} forceraster="0" '
        'enableorderby="0" symbollevels="0" referencescale="-1">\n'
        f"    <categories>{''.join(cats)}\n    </categories>\n"
        f"    <symbols>{''.join(syms)}\n    </symbols>\n"
        f"    <source-symbol>{_qml_symbol('0', cls.ungraded_hex, point)}\n    </source-symbol>\n"
        "  </renderer-v2>\n"
        f"  <layerGeometryType>{0 if point else 2}</layerGeometryType>\n"
        "</qgis>\n"
    )


def _sld_symbolizer(hex_: str, point: bool) -> str:
    fill = f'<se:Fill><se:SvgParameter name="fill">{hex_}</se:SvgParameter>'
    stroke = (f'<se:Stroke><se:SvgParameter name="stroke">{OUTLINE_HEX}</se:SvgParameter>'
              '<se:SvgParameter name="stroke-width">0.5</se:SvgParameter></se:Stroke>')
    if point:
        return (f"<se:PointSymbolizer><se:Graphic><se:Mark><se:WellKnownName>circle</se:WellKnownName>"
                f"{fill}</se:Fill>{stroke}</se:Mark><se:Size>8</se:Size></se:Graphic></se:PointSymbolizer>")
    return (f"<se:PolygonSymbolizer>{fill}"
            f'<se:SvgParameter name="fill-opacity">{FILL_OPACITY}</se:SvgParameter></se:Fill>'
            f"{stroke}</se:PolygonSymbolizer>")


def sld_style(layer: Layer, cls: Classification) -> str:
    """SLD 1.1.0 with SE 1.1 symbolizers: one Rule per grade, an ElseFilter rule for the rest."""
    point = _is_point(layer)
    rules = []
    for c in cls.classes:
        rules.append(
            f"\n        <se:Rule>\n          <se:Name>{escape(c.grade)}</se:Name>"
            f"\n          <se:Description><se:Title>{escape(c.label)}</se:Title></se:Description>"
            f"\n          <ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>{escape(cls.field)}</ogc:PropertyName>"
            f"<ogc:Literal>{escape(c.grade)}</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
            f"\n          {_sld_symbolizer(c.hex, point)}\n        </se:Rule>")
    rules.append(
        f"\n        <se:Rule>\n          <se:Name>ungraded</se:Name>"
        f"\n          <se:Description><se:Title>{escape(cls.ungraded_label)}</se:Title></se:Description>"
        f"\n          <se:ElseFilter/>\n          {_sld_symbolizer(cls.ungraded_hex, point)}\n        </se:Rule>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:se="http://www.opengis.net/se" xmlns:ogc="http://www.opengis.net/ogc" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.opengis.net/sld http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd">\n'
        f"  <NamedLayer>\n    <se:Name>{escape(layer.id)}</se:Name>\n    <UserStyle>\n"
        f"      <se:Name>{escape(layer.id)}-{escape(cls.field)}</se:Name>\n"
        f"      <se:Description><se:Title>{escape(layer.title)} by {escape(cls.field)}</se:Title>"
        f"<se:Abstract>classification from {escape(cls.source)}</se:Abstract></se:Description>\n"
        f"      <se:FeatureTypeStyle>{''.join(rules)}\n      </se:FeatureTypeStyle>\n"
        "    </UserStyle>\n  </NamedLayer>\n</StyledLayerDescriptor>\n"
    )


# --------------------------------------------------------------------------- endpoints


def _resolve(request: Request, layer_id: str, run: int | None, year: int | None, who: Principal):
    """``(layer, classification, run_id, headers, early_response)``."""
    who.require("public")
    layer = LAYERS.get(layer_id)
    if layer is None:
        return None, None, None, None, json_error(
            404, "NotFound", f"no layer '{layer_id}'; styles exist for: {', '.join(LAYERS)}")
    engine: sa.Engine = request.app.state.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # read-only
        _, headers, r304 = etag_response(request, data_version(conn), who,
                                         cache_control="public, max-age=60" if who.key_id is None else "private, max-age=60")
        if r304:
            return layer, None, None, headers, r304
        cls, run_id = for_run(conn, run, year, who.sees_drafts)
    if run_id is None and (run is not None or year is not None):
        what = f"run {run}" if run is not None else f"evaluation run for year {year}"
        return layer, None, None, headers, json_error(
            404, "RunNotFound", f"there is no {what}; leave out run/year for the newest run's colours")
    return layer, cls, run_id, headers, None


def _query(run: int | None, year: int | None, request: Request) -> str:
    q = {k: v for k, v in (("run", run), ("year", year)) if v is not None}
    if request.query_params.get("api_key"):
        q["api_key"] = request.query_params["api_key"]
    return ("?" + urlencode(q)) if q else ""


def _download(name: str) -> dict:
    return {"Content-Disposition": f'inline; filename="{name}"'}


_RUN = RUN_QUERY
_YEAR = YEAR_QUERY


@router.get("/styles", summary="Styles of every layer (MapLibre, QGIS QML, SLD)")
def list_styles(request: Request, who: Principal = Depends(principal)):
    who.require("public")
    base = base_url(request)
    return json_response({"styles": [{"id": lay.id, "title": lay.title, "links": style_links(base, lay.id)}
                                     for lay in LAYERS.values()]})


@router.get("/styles/{layer}.qml", summary="QGIS layer style (categorized on grade)", response_class=Response,
            responses={200: {"content": {QML: {}}}})
def get_qml(request: Request, layer: str, run: int | None = _RUN, year: int | None = _YEAR,
            who: Principal = Depends(principal)):
    lay, cls, _, headers, early = _resolve(request, layer, run, year, who)
    if early:
        return early
    return Response(qml_style(lay, cls), media_type=QML, headers={**headers, **_download(f"{lay.id}.qml")})


@router.get("/styles/{layer}.sld", summary="SLD 1.1 / SE 1.1 style (one rule per grade)", response_class=Response,
            responses={200: {"content": {SLD: {}}}})
def get_sld(request: Request, layer: str, run: int | None = _RUN, year: int | None = _YEAR,
            who: Principal = Depends(principal)):
    lay, cls, _, headers, early = _resolve(request, layer, run, year, who)
    if early:
        return early
    return Response(sld_style(lay, cls), media_type=SLD, headers={**headers, **_download(f"{lay.id}.sld")})


@router.get("/styles/{layer}/maplibre.json", summary="MapLibre GL style (v8) over the layer's vector tiles")
def get_maplibre(request: Request, layer: str, run: int | None = _RUN, year: int | None = _YEAR,
                 who: Principal = Depends(principal)):
    lay, cls, _, headers, early = _resolve(request, layer, run, year, who)
    if early:
        return early
    tilejson = f"{base_url(request)}/tiles/{lay.id}.json{_query(run, year, request)}"
    return json_response(maplibre_style(lay, cls, tilejson), media_type=MAPLIBRE, headers=headers)


@router.get("/styles/{layer}", summary="The classification (grade → colour, label) and style links")
def get_style_metadata(request: Request, layer: str, run: int | None = _RUN, year: int | None = _YEAR,
                       who: Principal = Depends(principal)):
    lay, cls, run_id, headers, early = _resolve(request, layer, run, year, who)
    if early:
        return early
    base = base_url(request)
    q = _query(run, year, request)
    links = [{**link, "href": link["href"] + q} for link in style_links(base, lay.id)[:3]]
    return json_response({"id": lay.id, "title": lay.title, "run_id": run_id, "classification": cls.as_json(),
                          "links": links}, headers=headers)
