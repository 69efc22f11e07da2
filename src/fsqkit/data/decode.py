"""Decoding one image file (or the bytes of one) robustly, for the streamed sources.

:func:`open_rgb` returns a PIL image in RGB mode and, for images it had to
convert in a way a user may want to know about, a one-line note:

- CMYK (and other colour spaces PIL knows): converted to RGB.
- 16-bit (and 32-bit integer) grey or colour: scaled to 8 bits (``>> 8``), not
  clipped, so a 16-bit PNG keeps its contrast.
- an alpha channel (RGBA, LA, a palette with transparency): dropped, as
  :func:`~fsqkit.data.dataset.to_uint8_chw` drops it.

A file that cannot be used (zero bytes, not an image, truncated, a decoder
error, an image too large to decode safely) raises :class:`BadImage`, whose
message names the file and the reason on one line.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class BadImage(ValueError):
    """An image file that cannot be decoded; ``str(err)`` is ``"PATH: reason"``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def open_rgb(
    source: str | bytes,
    name: str | None = None,
    draft: Callable[[int, int], tuple[int, int] | None] | None = None,
):
    """Decode ``source`` (a path, or the bytes of an image file) to an RGB PIL image.

    Args:
        source: file path or encoded bytes.
        name: how messages call the file (default: the path).
        draft: ``(w, h) -> (rw, rh) or None``, called with the stored size before
            decoding: a JPEG decoder may then reduce the image by a power of two
            while keeping it at least ``rw x rh`` (much faster for big JPEGs).

    Returns:
        ``(image, note)``: an RGB ``PIL.Image`` (fully loaded) and ``None`` or a
        short note on a conversion (CMYK, 16-bit, alpha).

    Raises:
        BadImage: the file is empty, unreadable or truncated.
    """
    from PIL import Image

    what = name or (source if isinstance(source, str) else "<bytes>")
    if isinstance(source, bytes):
        if not source:
            raise BadImage(what, "zero-byte file")
        stream = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise BadImage(what, "zero-byte file")
        except OSError as err:
            raise BadImage(what, f"cannot read ({_one_line(err)})") from None
        stream = source
    try:
        with Image.open(stream) as im:
            wanted = draft(*im.size) if draft is not None else None
            if wanted is not None and im.format == "JPEG":
                im.draft("RGB", wanted)
            im.load()
            return _to_rgb(im)
    except BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise BadImage(what, f"image too large ({_one_line(err)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
        # PIL's UnidentifiedImageError is an OSError; a truncated file raises
        # OSError("image file is truncated ...") on load.
        raise BadImage(what, f"cannot decode ({_one_line(err)})") from None


def _to_rgb(im):
    """``(RGB image, note or None)`` for a loaded PIL image of any mode."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im.copy(), None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if a.dtype.kind in "iu" and a.size and int(a.max()) > 255:
            shift = 8 if int(a.max()) <= 0xFFFF else 24
            a = np.clip(a.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
            note = f"{16 if shift == 8 else 32}-bit grey scaled to 8 bits"
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
            note = None
        return Image.fromarray(np.repeat(a[..., None], 3, axis=-1), "RGB"), note
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        return im.convert("RGBA").convert("RGB"), "alpha channel dropped"
    if mode == "CMYK":
        return im.convert("RGB"), "CMYK converted to RGB"
    if mode.startswith("RGB") or mode in ("F",):
        # 16-bit RGB ("RGB;16" etc.) or float images: go through numpy.
        a = np.asarray(im).astype(np.float64)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        return Image.fromarray(a[..., :3], "RGB"), f"{mode} image converted to 8-bit RGB"
    return im.convert("RGB"), None
