"""Reading a request's image and decoding it, refusing bad input with a status and a message (never a crash).

The body is read with a byte cap (413), its type checked (415: multipart/form-data with one file part, or raw
image/* or application/octet-stream bytes), and the image decoded by vitkit's own decoder (EXIF rotation, any
mode to 8-bit RGB, truncation caught) behind a header check: a format allow-list (no EPS, which would call
Ghostscript), the server's pixel cap and Pillow's decompression-bomb limit (413) and one frame only (422).
Pillow reads from memory here, so no message names a path of the machine.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from vitkit.data.decode import BadImageError, decode_bytes
from vitkit.serve.errors import ServeError

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")  # what a browser or camera sends; no EPS/PDF/PSD
RAW_TYPES = ("application/octet-stream",)  # besides image/*
MULTIPART = "multipart/form-data"


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def acceptable(kind: str) -> bool:
    """Whether a declared type may hold image bytes."""
    return kind.startswith("image/") or kind in RAW_TYPES


async def read_image_bytes(request: Request, max_bytes: int) -> bytes:
    """The uploaded image's encoded bytes: the file part of a multipart form, or the raw body."""
    kind = media_type(request)
    if kind != MULTIPART and not acceptable(kind):
        shown = f"Content-Type {kind}" if kind else "no Content-Type"
        raise ServeError(
            415,
            "unsupported_media_type",
            f"{shown}: send the image as multipart/form-data (a file field) or as raw bytes with an image/* "
            "or application/octet-stream Content-Type",
        )
    body = await read_capped(request, max_bytes)
    data = await file_part(request, body, max_bytes) if kind == MULTIPART else body
    if not data:
        raise ServeError(400, "empty", "the upload is empty (0 bytes): send an image file")
    return data


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes` (Content-Length is checked first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(int(declared), max_bytes)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large(total, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(size: int, max_bytes: int) -> ServeError:
    """The 413 of an upload over the byte cap."""
    return ServeError(
        413,
        "too_large",
        f"the upload is {'over ' if size > max_bytes else ''}{size / 2**20:.1f} MiB; this server accepts at most "
        f"{max_bytes / 2**20:.1f} MiB (--max-upload-mb)",
    )


async def file_part(request: Request, body: bytes, max_bytes: int) -> bytes:
    """The bytes of the one file part of a multipart body already read."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=max_bytes)
    except Exception as error:  # starlette's MultiPartException and the parser's own errors
        raise ServeError(400, "bad_multipart", f"malformed multipart/form-data body: {error}") from None
    try:
        files = [value for value in form.values() if isinstance(value, UploadFile)]
        if not files:
            raise ServeError(400, "no_file", "the multipart form has no file part: send the image as field 'file'")
        part = files[0]
        declared = (part.content_type or "").split(";")[0].strip().lower()
        if declared and not acceptable(declared):
            raise ServeError(
                415, "unsupported_media_type", f"the file part is {declared}, not an image: upload an image file"
            )
        return await part.read()
    finally:
        await form.close()


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The upload as an upright 8-bit RGB image (vitkit's decoder), or a ServeError saying what is wrong."""
    check_header(data, max_pixels)
    try:
        return decode_bytes(data)
    except BadImageError as error:
        message = str(error)
        if message.startswith("decompression bomb"):
            raise ServeError(413, "too_many_pixels", message) from None
        raise ServeError(400, "unreadable", f"the image could not be decoded: {message}") from None


def check_header(data: bytes, max_pixels: int) -> None:
    """Refuse what the header already shows: not an image, a format not served, too many pixels, several frames."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
                kind = image.format
    except UnidentifiedImageError:
        if identified_outside_allow_list(data):
            raise ServeError(
                415, "unsupported_format", f"this image format is not served; send one of {', '.join(FORMATS)}"
            ) from None
        raise ServeError(400, "not_an_image", "the upload is not an image (no known image format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ServeError(413, "too_many_pixels", f"decompression bomb refused: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ServeError(400, "unreadable", f"the image header could not be read: {error}") from None
    if width * height > max_pixels:
        raise ServeError(
            413,
            "too_many_pixels",
            f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels; this server decodes at most "
            f"{max_pixels / 1e6:.1f} (--max-megapixels)",
        )
    if frames > 1:
        raise ServeError(
            422, "animated", f"the {kind} image has {frames} frames; send a single still image (one frame)"
        )


def identified_outside_allow_list(data: bytes) -> bool:
    """Whether Pillow knows the bytes as a format this server does not decode (EPS, PDF, PSD, ...)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format not in FORMATS
    except Exception:  # not an image at all: any error of any plugin means "unknown"
        return False
