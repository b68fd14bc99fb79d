"""Serving the study: the Gradio page plus one route that hands out clips by opaque token, so
no address the page fetches carries a file, folder or system name; one launch for the CLI,
app.py and the tests."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from es4r.study.store import StudyStore

logger = logging.getLogger(__name__)

CLIP_PATH = "clip"  # the page plays `clip/<token>`, relative to itself
CLIP_CACHE = "private, max-age=86400"  # a token always names the same file


def clip_route(store: StudyStore) -> Route:
    """GET clip/<token>: the stimulus behind a token this study gave out (byte ranges served,
    so the player can seek), else 404; nothing else on disk is reachable through it."""

    def clip(request: Request) -> Response:
        owner = store.clip(request.path_params["token"])
        if owner is None or not owner.path.is_file():
            return Response(status_code=404)
        return FileResponse(owner.path, media_type="audio/wav", headers={"Cache-Control": CLIP_CACHE})

    return Route(f"/{CLIP_PATH}/{{token}}", clip, methods=["GET", "HEAD"])


def launch_study(app: gr.Blocks, db_path: str | Path, host: str | None, port: int, concurrency: int,
                 **launch_options):
    """Queue and launch the study app on `host:port` with the clip route mounted first. No
    folder is opened to Gradio's own file route: clips go through the token route alone."""
    app.queue(default_concurrency_limit=concurrency)
    return app.launch(server_name=host, server_port=port, footer_links=[],  # its grey links read 2.6:1
                      app_kwargs={"routes": [clip_route(StudyStore(db_path))]}, **launch_options)
