"""HTTP for the search app: the FastAPI app and its error handlers, the OpenAPI description of ``POST /search``,
request parsing (body limits, content encodings, multipart, strokes JSON, uploaded images -> a validated
``uint8 [S, S]`` sketch) and the optional API key. No Serve imports; the deployments call these.

Bad input never yields a 5xx: every rejected request gets a 4xx with ``{"detail": "<what is wrong>"}`` --
400 unreadable body (empty, not an image, truncated image, invalid JSON or multipart, corrupt compressed
body), 401 missing or wrong API key, 413 body over ``max_body_bytes`` (also after decompression) or image
over ``max_pixels``, 415 unsupported content type or encoding, 422 a well-formed request with invalid values
(bad strokes, ``k`` out of ``[1, max_k]``, an image with no ink), 404 unknown item ids.

Multipart bodies are parsed here (a small RFC 7578 reader) rather than by FastAPI's ``UploadFile``, so the
app needs no ``python-multipart`` and the byte limit applies to the whole body as it streams in.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import os
import zlib
from email.message import Message
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_sbir.data.decode import RenderSpec
from ray_sbir.serving.config import ServeConfig

__all__ = ["ApiKey", "RequestParser", "SEARCH_BODY", "api", "api_error", "html_attr", "parse_multipart"]

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # never hand user bytes to e.g. the EPS plugin
INLINE_JSON_BYTES = 16 * 1024  # stroke bodies up to this size are validated on the event loop
JSON_FIELDS = frozenset({"strokes", "k", "filter"})  # what a JSON search body may hold
RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/webp",
                   "application/octet-stream")
CONTENT_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")


def parse_multipart(body: bytes, content_type: str) -> list[dict]:
    """Parts of a ``multipart/form-data`` body: ``[{"name", "filename", "content_type", "data"}]``.

    Raises ``ValueError`` saying what is malformed."""
    msg = Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ValueError("multipart body without a boundary parameter in its Content-Type")
    delim = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delim)
    if len(chunks) < 2:
        raise ValueError("multipart body does not contain its boundary")
    parts, closed = [], False
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            closed = True
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part (no blank line after its headers)")
        headers = Message()
        for line in head.split(b"\r\n"):
            if not line.strip():
                continue
            key, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise ValueError(f"malformed multipart header line {line[:80]!r}")
            headers[key.strip()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            raise ValueError("multipart part without 'Content-Disposition: form-data'")
        parts.append({"name": headers.get_param("name", header="content-disposition"),
                      "filename": headers.get_filename(),
                      "content_type": headers.get_content_type() if headers.get("content-type") else None,
                      "data": data})
    if not closed:
        raise ValueError("multipart body is truncated (no closing boundary)")
    return parts


def html_attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def api_error(status: int, detail: str, headers: dict | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


api = FastAPI(
    title="ray-sbir",
    version="0.1.0",
    description="Zero-shot sketch-based image retrieval: draw or upload a sketch, get the nearest gallery images. "
                "The doodle page is at `/`.",
)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    msgs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        msgs.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return JSONResponse({"detail": "; ".join(msgs) or "invalid request"}, status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "A sketch: QuickDraw strokes as JSON, an image upload, or a raw image body.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["strokes"], "additionalProperties": False,
                "properties": {
                    "strokes": {"type": "array", "description": "[[[x, ...], [y, ...]], ...] (optionally a third "
                                "list of timings per stroke, QuickDraw raw format)",
                                "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
                    "k": {"type": "integer", "minimum": 1, "description": "number of results (default 20)"},
                    "filter": {"type": "object", "description": "only rows whose columns match, all of: a string "
                               "column = a string, a list (any of) or {\"prefix\": ...}; recognized = true/false; "
                               "/info lists the columns (e.g. {\"label\": [\"cat\", \"dog\"], "
                               "\"countrycode\": \"DE\"})"},
                },
            }, "example": {"strokes": [[[10, 100, 100, 10, 10], [10, 10, 100, 100, 10]]], "k": 10}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}, "k": {"type": "integer"}},
            }},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


class RequestParser:
    """Turns a ``POST /search`` request into ``(sketch uint8 [S, S], k)`` within ``cfg``'s limits, rendering
    strokes as the checkpoint's sketch encoder expects (``render``)."""

    def __init__(self, cfg: ServeConfig, render: RenderSpec):
        self.cfg = cfg
        self.size, self.line_width, self.padding = render.size, render.line_width, render.padding

    async def sketch(self, request: Request, k: str | None) -> tuple[np.ndarray, int, Any]:
        """``(sketch image, k, filter)``: the filter as the JSON body sent it (None: none; checked against the
        index's columns by the ingress, :class:`ray_sbir.search.filters.RowFilter`)."""
        k_value = self._parse_k(k, "query parameter k", text=True) if k is not None else None
        body = await self._read_body(request)
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == "application/json" or (ctype in ("", "text/plain") and body.lstrip()[:1] in (b"{", b"[")):
            # A doodle's strokes (a few KB) parse and rasterize in well under a millisecond: on the event loop
            # that costs less than a hop to a worker thread and back; bigger bodies must not block the loop.
            sketch, json_k, row_filter = (self._sketch_from_json(body) if len(body) <= INLINE_JSON_BYTES
                                          else await asyncio.to_thread(self._sketch_from_json, body))
            k_value = json_k if json_k is not None else k_value
        elif ctype == "multipart/form-data":
            row_filter = None
            data, form_k = self._image_from_multipart(body, request.headers.get("content-type", ""))
            k_value = form_k if form_k is not None else k_value
            sketch = await asyncio.to_thread(self._sketch_from_image, data)
        elif ctype in RAW_IMAGE_TYPES or ctype.startswith("image/") or ctype == "":
            row_filter = None
            sketch = await asyncio.to_thread(self._sketch_from_image, body)
        else:
            raise api_error(415, f"unsupported Content-Type {ctype!r}: send application/json strokes, "
                                 "multipart/form-data with a 'file' field, or an image/png or image/jpeg body")
        return sketch, self.cfg.default_k if k_value is None else k_value, row_filter

    def _parse_k(self, value: Any, where: str, text: bool = False) -> int:
        """``k`` from JSON (an integer) or, ``text=True``, from a query parameter / form field."""
        if text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise api_error(422, f"{where} must be an integer, got {value[:40]!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise api_error(422, f"{where} must be an integer, got {type(value).__name__}")
        if not 1 <= value <= self.cfg.max_k:
            raise api_error(422, f"{where} must be between 1 and {self.cfg.max_k}, got {value}")
        return value

    async def _read_body(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                declared_n = int(declared)
            except ValueError:
                raise api_error(400, f"invalid Content-Length header {declared[:40]!r}") from None
            if declared_n > limit:
                raise api_error(413, f"request body of {declared_n} bytes exceeds the limit of {limit} bytes")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise api_error(413, f"request body exceeds the limit of {limit} bytes")
        if not buf:
            raise api_error(400, "empty request body: send a sketch (strokes JSON or an image)")
        return self._decode_content(bytes(buf), request.headers.get("content-encoding", ""))

    def _decode_content(self, body: bytes, encoding: str) -> bytes:
        """The body after its ``Content-Encoding`` (gzip or deflate), decompressed at most to the byte limit:
        a small compressed body must not inflate into gigabytes (a zip bomb)."""
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        for coding in reversed(codings):  # applied in the order listed: undo from the last
            if coding not in CONTENT_ENCODINGS:
                raise api_error(415, f"unsupported Content-Encoding {coding[:40]!r}: send the body uncompressed, "
                                     "or gzip / deflate")
            if coding == "identity":
                continue
            limit = self.cfg.max_body_bytes
            d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
            try:
                body = d.decompress(body, limit + 1)
            except zlib.error as e:
                raise api_error(400, f"invalid {coding} body: {e}") from None
            if len(body) > limit:
                raise api_error(413, f"request body exceeds the limit of {limit} bytes once decompressed")
            if not d.eof:
                raise api_error(400, f"{coding} body is truncated")
        if not body:
            raise api_error(400, "empty request body: send a sketch (strokes JSON or an image)")
        return body

    def _image_from_multipart(self, body: bytes, content_type: str) -> tuple[bytes, int | None]:
        try:
            parts = parse_multipart(body, content_type)
        except ValueError as e:
            raise api_error(400, f"invalid multipart body: {e}") from None
        file_part = next((p for p in parts if p["name"] in ("file", "image")), None)
        if file_part is None:
            file_part = next((p for p in parts if p["filename"]), None)
        if file_part is None:
            raise api_error(400, "multipart body has no file: send the image in a field named 'file'")
        k = None
        k_part = next((p for p in parts if p["name"] == "k"), None)
        if k_part is not None:
            k = self._parse_k(k_part["data"].decode("utf-8", "replace"), "form field k", text=True)
        if not file_part["data"]:
            raise api_error(400, "the uploaded file is empty")
        return file_part["data"], k

    def _sketch_from_image(self, data: bytes) -> np.ndarray:
        from PIL import Image

        from ray_sbir.data.images import BadItem, decode_sketch_image

        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:  # reads the header only
                w, h = img.size
        except Image.DecompressionBombError:
            raise api_error(413, f"image too large: more than {self.cfg.max_pixels} pixels") from None
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError... on bad bytes
            raise api_error(400, f"not a decodable image (PNG, JPEG, GIF, BMP or WebP expected): "
                                  f"{type(e).__name__}") from None
        if w * h > self.cfg.max_pixels:
            raise api_error(413, f"image of {w}x{h} = {w * h} pixels exceeds the limit of "
                                  f"{self.cfg.max_pixels} pixels")
        try:
            return decode_sketch_image(data, self.size, "uploaded image")
        except BadItem as e:
            msg = str(e)
            if "no ink" in msg:
                raise api_error(422, f"{msg}: the image is blank, draw something dark on a light background")
            if "exceeds" in msg or "too large" in msg:
                raise api_error(413, msg)
            raise api_error(400, msg) from None

    def _sketch_from_json(self, body: bytes) -> tuple[np.ndarray, int | None, Any]:
        from ray_sbir.data.quickdraw import rasterize, strokes_from_lists

        try:
            obj = json.loads(body)
        except UnicodeDecodeError:
            raise api_error(400, "invalid JSON: the body is not UTF-8") from None
        except json.JSONDecodeError as e:
            raise api_error(400, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise api_error(400, "invalid JSON: nested too deeply") from None
        k = row_filter = None
        if isinstance(obj, dict):
            if "strokes" not in obj:
                raise api_error(422, "missing 'strokes': send {\"strokes\": [[[x, ...], [y, ...]], ...], \"k\": 20}")
            unknown = sorted(set(obj) - JSON_FIELDS)
            if unknown:  # silently ignored, a misspelt or newer field would answer as if it were not sent
                raise api_error(400, f"unknown field {unknown[0]!r} in the JSON body: it accepts "
                                     f"{', '.join(sorted(JSON_FIELDS))}")
            strokes = obj["strokes"]
            if "k" in obj and obj["k"] is not None:
                k = self._parse_k(obj["k"], "k")
            row_filter = obj.get("filter")
        elif isinstance(obj, list):
            strokes = obj
        else:
            raise api_error(422, f"expected a JSON object with 'strokes', got {type(obj).__name__}")
        if not isinstance(strokes, list):
            raise api_error(422, "'strokes' must be a list of strokes [[x, ...], [y, ...]], "
                                  f"got {type(strokes).__name__}")
        if not strokes:
            raise api_error(422, "empty drawing: 'strokes' has no strokes")
        if len(strokes) > self.cfg.max_strokes:
            raise api_error(422, f"too many strokes: {len(strokes)} > {self.cfg.max_strokes}")
        points = sum(len(s[0]) for s in strokes if isinstance(s, list) and s and isinstance(s[0], list))
        if points > self.cfg.max_points:
            raise api_error(422, f"too many points: {points} > {self.cfg.max_points}")
        try:  # validated and turned into arrays as they are: the same checks as an ndjson line's
            arrays = [np.asarray(s[:, :2], np.float32) for s in strokes_from_lists(strokes)]
        except (ValueError, TypeError) as e:
            raise api_error(422, f"invalid strokes: {e}") from None
        if max(float(np.abs(a).max()) for a in arrays) > self.cfg.max_coordinate:
            raise api_error(422, f"stroke coordinates out of range: |x|, |y| must be <= {self.cfg.max_coordinate:g}")
        try:
            image = rasterize([arrays], size=self.size, line_width=self.line_width, padding=self.padding)[0]
        except ValueError as e:
            raise api_error(422, f"cannot rasterize the strokes: {e}") from None
        return image, k, row_filter


class ApiKey:
    """The optional API key on ``/search`` and ``/items``: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    The key comes from the environment variable ``cfg.api_key_env`` or the first line of the file
    ``cfg.api_key_file``, read when a replica starts (a rotated file takes effect on the next replica); it is
    compared in constant time and never logged or returned."""

    def __init__(self, cfg: ServeConfig):
        self._key: bytes | None = None
        if cfg.api_key_env:
            value = os.environ.get(cfg.api_key_env, "")
            if not value.strip():
                raise ValueError(f"api_key_env: the environment variable {cfg.api_key_env} is not set (or empty) "
                                 "where the replica runs")
            self._key = value.strip().encode()
        elif cfg.api_key_file:
            from ray_sbir import fs

            try:
                lines = fs.read_text(cfg.api_key_file).strip().splitlines()
            except FileNotFoundError:
                raise ValueError(f"api_key_file: the API key file {cfg.api_key_file} does not exist (where the "
                                 "replica runs)") from None
            if not lines or not lines[0].strip():
                raise ValueError(f"api_key_file {cfg.api_key_file} is empty")
            self._key = lines[0].strip().encode()

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            raise api_error(401, "this gallery needs an API key: send 'Authorization: Bearer <key>' or "
                                 "'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._key):
            raise api_error(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
