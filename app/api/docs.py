"""``GET /docs`` — interactive API documentation that works offline.

Swagger UI 5 (``swagger-ui-dist`` from npm, Apache-2.0, vendored under
``app/static/vendor/swagger-ui`` with its licence) renders the OpenAPI 3.1 document served at
``/api``: no CDN, so the page works on the offline intranets counties run on. FastAPI's own
``/docs`` (which loads Swagger UI from a CDN) and ``/openapi.json`` are switched off in
:func:`app.main.create_app`; ``/api`` is the one OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html

router = APIRouter(tags=["service"])


@router.get("/docs", include_in_schema=False)
def docs(request: Request):
    root = request.scope.get("root_path", "").rstrip("/")
    vendor = f"{root}/static/vendor/swagger-ui"
    return get_swagger_ui_html(
        openapi_url=f"{root}/api", title=f"{request.app.title} — API",
        swagger_js_url=f"{vendor}/swagger-ui-bundle.js", swagger_css_url=f"{vendor}/swagger-ui.css",
        swagger_favicon_url=f"{vendor}/favicon-32x32.png",
        swagger_ui_parameters={"docExpansion": "list", "defaultModelsExpandDepth": 0})
