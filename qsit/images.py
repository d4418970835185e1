"""Image loading and validation: every way a file can fail, named.

Whatever comes in — a path, bytes, or a PIL image in any mode — leaves as an
8-bit RGB image with its EXIF orientation applied, plus notes about anything
that was changed on the way (so a report can say "first frame of 12 used").
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)


class ImageLoadError(ValueError):
    """An image could not be read; the message names the source and the reason."""


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image
    name: str
    notes: tuple[str, ...] = field(default=())


def load_image(source, name: str | None = None, max_pixels: int | None = None) -> LoadedImage:
    """Read ``source`` (path, bytes or PIL image) into RGB, or raise ``ImageLoadError``.

    ``max_pixels`` defaults to Pillow's decompression-bomb limit; an image
    above it is refused before its pixels are decoded.
    """
    if isinstance(source, Image.Image):
        return _normalise(source, name or "<image>", max_pixels)
    if isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        if not source:
            raise ImageLoadError(f"{name}: empty data (0 bytes)")
        return _open_and_normalise(io.BytesIO(source), name, max_pixels)
    path = Path(os.fspath(source))
    name = name or str(path)
    if not path.exists():
        raise ImageLoadError(f"{name}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{name}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    with open(path, "rb") as f:
        return _open_and_normalise(f, name, max_pixels)


def _open_and_normalise(fp, name: str, max_pixels: int | None) -> LoadedImage:
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; we refuse at 1x.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not a recognised image format (is it really an image?)") from None
    except OSError as e:
        raise ImageLoadError(f"{name}: cannot open image ({e})") from None
    with img:
        _check_size(img, name, limit)
        return _normalise(img, name, max_pixels, checked=True)


def _check_size(img: Image.Image, name: str, limit: int | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{name}: image has no pixels ({w}x{h})")
    if limit is not None and w * h > limit:
        raise ImageLoadError(
            f"{name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} "
            "(Pillow's decompression-bomb guard); raise it with --max-pixels if the image is trusted"
        )


def _normalise(img: Image.Image, name: str, max_pixels: int | None, checked: bool = False) -> LoadedImage:
    if not checked:
        _check_size(img, name, Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
    notes: list[str] = []
    n_frames = getattr(img, "n_frames", 1)
    try:
        if n_frames > 1:
            img.seek(0)
            notes.append(f"animated image: first of {n_frames} frames used")
        img.load()
        orientation = _orientation(img)
        oriented = ImageOps.exif_transpose(img)
    except OSError as e:
        raise ImageLoadError(f"{name}: image data is truncated or corrupt ({e})") from None
    except (ValueError, SyntaxError) as e:
        raise ImageLoadError(f"{name}: image data is corrupt ({e})") from None
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    rgb, note = _to_rgb(oriented)
    if note:
        notes.append(note)
    return LoadedImage(image=rgb, name=name, notes=tuple(notes))


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:  # malformed EXIF is not worth failing the image for
        return None


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    mode = img.mode
    if mode == "RGB":
        return img.copy(), None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's convert() clips high-bit-depth values at 255; rescale instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB"), f"{mode} (high bit depth) scaled to 8-bit RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode} with alpha composited on white"
    return img.convert("RGB"), f"{mode} converted to RGB"


SCORING_FLIPS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180)
"""The views a scoring image may be seen in: as it is, mirrored, upside down, both. Label-exact for
qsit's pseudo-MOS (an SSIM against the pristine crop, which flips with it); no quarter turns, which
would make a landscape image a portrait one and so change its anyres grid. Training draws scoring
records in them (``train.flip_scoring_images``); ``Assessor.score(views=N)`` averages the first N."""


def flipped(loaded: LoadedImage, transpose: Image.Transpose | None) -> LoadedImage:
    """``loaded`` seen in one of ``SCORING_FLIPS`` (itself for None)."""
    if transpose is None:
        return loaded
    return LoadedImage(loaded.image.transpose(transpose), loaded.name, loaded.notes)


def grey(rgb: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image in grey: its channel mean in every channel. That mean is the luminance
    qsit's pseudo-MOS compares, so a damaged image and its grey view share their label."""
    return np.repeat(rgb.mean(-1, keepdims=True), 3, axis=-1)


def grey_image(img: Image.Image) -> Image.Image:
    """``grey`` of an RGB picture, as an RGB picture."""
    return Image.fromarray(np.round(grey(np.asarray(img, dtype=np.float64))).astype(np.uint8))


def find_images(inputs, recursive: bool = True) -> tuple[list[Path], list[str]]:
    """Expand files, folders and glob patterns into image paths (sorted, unique).

    Returns the paths and a list of problems (an input that matched nothing),
    so a caller can report those and go on with the rest.
    """
    import glob

    found: dict[str, Path] = {}
    problems: list[str] = []
    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            hits = [q for q in sorted(p.glob(pattern)) if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
            if not hits:
                problems.append(f"{text}: directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif p.exists():
            hits = [p]  # an explicit file is taken whatever its suffix; loading judges it
        elif glob.has_magic(text):
            hits = [Path(q) for q in sorted(glob.glob(text, recursive=True)) if Path(q).is_file()]
            if not hits:
                problems.append(f"{text}: pattern matched no files")
        else:
            hits = []
            problems.append(f"{text}: no such file or directory")
        for h in hits:
            found.setdefault(str(h), h)
    return list(found.values()), problems
