"""The stylesheets that Python modules define (charts, log colours), served as static files.

They are files, not `<style>` blocks in the pages, so the Content-Security-Policy can
allow stylesheets from this server only (see server/headers.py).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from conveyor.server.web.ansi import ANSI_CSS
from conveyor.server.web.charts import CHART_CSS

router = APIRouter(include_in_schema=False)


@router.get("/static/charts.css")
def charts_css() -> Response:
    return Response(CHART_CSS, media_type="text/css")


@router.get("/static/ansi.css")
def ansi_css() -> Response:
    return Response(ANSI_CSS, media_type="text/css")
