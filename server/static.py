"""Serves the browser client (client/) at `/`, with content types and cache headers.

Module files revalidate (ETag, no-cache) so an upgrade is picked up at once; there is no
bundler, so no hashed file names to cache forever.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, abort, send_from_directory

from yahaml_voice.core.config import Config
from yahaml_voice.core.resources import package_path

TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}


# Files and folders in client/ that are tools, not the page.
DEV_ONLY = frozenset({"node_modules", "package.json", "package-lock.json", "tsconfig.json"})


def client_dir(config: Config) -> Path:
    if config.server.client_dir:
        return Path(config.server.client_dir)
    return package_path("client")


def static_blueprint(config: Config) -> Blueprint:
    root = client_dir(config)
    bp = Blueprint("client", __name__)

    async def send(name: str) -> Response:
        # NUL and other control characters name no file of ours (and make os calls raise).
        if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name):
            abort(404)
        # A checkout's client/ also holds development files (node_modules/ with TypeScript,
        # package.json, tsconfig.json): the page needs none of them.
        parts = name.split("/")
        if any(part.startswith(".") or part in DEV_ONLY for part in parts):
            abort(404)
        try:
            path = (root / name).resolve()
            found = root.resolve() in path.parents and path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            abort(404)
        suffix = path.suffix.lower()
        if suffix not in TYPES:
            abort(404)
        response: Response = await send_from_directory(root, name, mimetype=TYPES[suffix])
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if suffix == ".html":
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:;"
                " img-src 'self' data:; style-src 'self'; script-src 'self'"
            )
            response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @bp.get("/")
    async def index() -> Response:
        return await send("index.html")

    @bp.get("/<path:name>")
    async def asset(name: str) -> Response:
        return await send(name)

    return bp
