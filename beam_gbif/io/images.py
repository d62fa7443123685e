"""Training-ready images with Pillow: decode check, size filters, upright pixels, resize, re-encode.

``prepare`` runs in a thread pool, never on the event loop: Pillow releases the GIL while it
decodes, resizes and encodes, so the pool's threads use every core while the loop keeps
downloading. The JPEG decoder's reduced-size decoding (``draft``: 1/2, 1/4 or 1/8 of the size,
done in the DCT domain) makes a 12-megapixel photo cost about what a 0.2-megapixel one does when
the target is small, and still reads every byte of the scan, so a cut body is still caught.
The geometry (sizes, crops, filters) is core/image_geometry.py.
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image, features

from beam_gbif.core.image_geometry import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_RESIZE_MODE,
    Geometry,
    border_offset,
    check_image_options,
    size_filter,
    target_geometry,
)
from beam_gbif.core.image_metadata import NotStrippable, strip_metadata
from beam_gbif.core.records import Status
from beam_gbif.core.source_sizes import check_source_size

# --max_image_pixels replaces Pillow's process-wide bomb check, from the header and before any
# decode; Pillow's own would warn or refuse by its default instead of the option's value.
Image.MAX_IMAGE_PIXELS = None

# Formats Pillow decodes here; anything else (HEIC, video, sound) is stored as fetched.
_DECODABLE = frozenset({"jpg", "png", "gif", "webp", "tif", "bmp"} | ({"avif"} if features.check("avif") else set()))
_ENCODERS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transpose that makes the pixels upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """What is done to each fetched image (options of the same names; README). ``image_size`` None: originals kept.

    ``max_aspect_ratio`` and ``min_image_size``: 0 is off. ``image_threads``: the decode/resize
    pool's size (0: one per CPU, the work is CPU-bound).
    """

    image_size: int | None = None
    resize_mode: str = DEFAULT_RESIZE_MODE
    resize_only_if_bigger: bool = True
    min_image_size: int = 0
    max_aspect_ratio: float = 0.0
    encode_format: str = "jpg"
    encode_quality: int = 95
    validate_images: bool = True
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    strip_metadata: bool = False
    source_size: str = "auto"
    image_threads: int = 0

    def __post_init__(self) -> None:
        check_image_options(self.image_size, self.resize_mode, self.encode_format, self.encode_quality,
                            self.min_image_size, self.max_aspect_ratio, self.max_image_pixels)
        check_source_size(self.source_size)

    @property
    def active(self) -> bool:
        """False when every image is stored exactly as fetched, unopened."""
        return bool(self.image_size or self.validate_images or self.min_image_size or self.max_aspect_ratio
                    or self.strip_metadata)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The bytes to store and their sizes (0: not an image decoded here)."""

    body: bytes
    ext: str
    mime: str
    width: int = 0
    height: int = 0
    original_width: int = 0
    original_height: int = 0


class Rejected(Exception):
    """The image gets no file: FAILED_DECODE or a FILTERED_* status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def prepare(body: bytes, ext: str, mime: str, s: ImageSettings) -> Prepared:
    """The file to store for a fetched ``body`` (sniffed as ``ext``); raises Rejected."""
    if ext not in _DECODABLE or not s.active:
        return Prepared(body, ext, mime)
    try:
        with Image.open(io.BytesIO(body)) as im:
            return _prepare_open(im, body, ext, mime, s)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises, the image does not decode
        raise Rejected(Status.FAILED_DECODE, f"{ext} does not decode: {type(exc).__name__}: {exc}") from None


def _prepare_open(im: Image.Image, body: bytes, ext: str, mime: str, s: ImageSettings) -> Prepared:
    orientation = _orientation(im)
    width, height = im.size
    if width * height > s.max_image_pixels:
        raise Rejected(Status.FAILED_DECODE, f"{width}x{height} = {width * height} pixels, above --max_image_pixels "
                                             f"{s.max_image_pixels}: not decoded")
    upright = (height, width) if orientation >= 5 else (width, height)
    refused = size_filter(*upright, s.min_image_size, s.max_aspect_ratio)
    if refused:
        raise Rejected(*refused)
    if s.image_size is None:
        if s.validate_images:
            _check_decodes(im, body, ext)
        stored = _stripped(body, ext, orientation) if s.strip_metadata else body
        return Prepared(stored, ext, mime, *upright, *upright)
    geometry = target_geometry(*upright, s.image_size, s.resize_mode, s.resize_only_if_bigger)
    if ext == "png":
        Image.open(io.BytesIO(body)).verify()  # chunk CRCs: load() alone does not check them all
    image = _shaped(_decoded(im, geometry, orientation), geometry, orientation)
    data, out_ext, out_mime = _encode(image, s)
    return Prepared(data, out_ext, out_mime, *image.size, *upright)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels are taken as they are stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_decodes(im: Image.Image, body: bytes, ext: str) -> None:
    """Decodes the whole body; a JPEG at 1/8 scale (every byte of the scan is still read, 64x fewer pixels made)."""
    if ext == "png":
        Image.open(io.BytesIO(body)).verify()
    if im.format == "JPEG":
        im.draft(None, (1, 1))
    im.load()


def _stripped(body: bytes, ext: str, orientation: int) -> bytes:
    try:
        stripped = strip_metadata(body, ext, orientation)
    except (NotStrippable, IndexError, ValueError) as exc:
        raise Rejected(Status.FAILED_DECODE, f"{ext} structure unreadable while removing its metadata: {exc}") from None
    return body if stripped is None else stripped


def _decoded(im: Image.Image, geometry: Geometry, orientation: int) -> Image.Image:
    """The loaded pixels, in a mode every encoder here takes; a JPEG decoded at the smallest scale still >= the target."""
    if im.format == "JPEG" and geometry.resized:
        w, h = geometry.scaled
        im.draft("RGB" if im.mode == "RGB" else None, (h, w) if orientation >= 5 else (w, h))
    im.load()
    if im.mode in ("RGB", "RGBA", "L", "LA"):
        return im
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "La"):
        return im.convert("RGBA")
    if im.mode == "1":
        return im.convert("L")
    if im.mode.startswith("I"):  # 16/32-bit grey: scaled to 8 bits, not clipped to white
        grey = im.convert("I")
        scale = 1 / 256 if grey.getextrema()[1] > 255 else 1
        return grey.point(lambda v: v * scale).convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, F, ...


def _shaped(image: Image.Image, geometry: Geometry, orientation: int) -> Image.Image:
    """Resized (in the stored orientation: cheaper, the same pixels), made upright, cropped or padded."""
    w, h = geometry.scaled
    stored_scaled = (h, w) if orientation >= 5 else (w, h)
    if image.size != stored_scaled:  # a JPEG draft may already be close to it: the rest is a small Lanczos step
        image = image.resize(stored_scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    if geometry.crop:
        image = image.crop(geometry.crop)
    if geometry.canvas:
        fill = (0,) * len(image.getbands())
        canvas = Image.new(image.mode, geometry.canvas, fill[:-1] + (255,) if image.mode in ("RGBA", "LA") else fill)
        canvas.paste(image, border_offset(image.size, geometry.canvas))
        image = canvas
    return image


def _encode(image: Image.Image, s: ImageSettings) -> tuple[bytes, str, str]:
    pillow_format, mime = _ENCODERS[s.encode_format]
    if s.encode_format == "jpg" and image.mode in ("RGBA", "LA"):
        flat = Image.new(image.mode[:-1], image.size, "white")  # JPEG has no alpha: flattened onto white
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    image.info = {}  # nothing of the source's metadata reaches the encoder
    out = io.BytesIO()
    if pillow_format == "PNG":
        image.save(out, pillow_format)
    else:
        image.save(out, pillow_format, quality=s.encode_quality)
    return out.getvalue(), s.encode_format, mime
