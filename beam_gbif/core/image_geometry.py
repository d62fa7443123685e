"""Pure image geometry: the stored size per resize mode and the size filters (the Pillow work is io/images.py).

Every size here is of the upright image (EXIF orientation applied), so a portrait photo stored
sideways with orientation 6 is treated as the portrait it shows.
"""

from __future__ import annotations

import dataclasses

from beam_gbif.core.errors import OptionError
from beam_gbif.core.records import Status

# img2dataset's names, so a user moving over keeps their flags.
RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
DEFAULT_RESIZE_MODE = "keep_ratio_largest"
ENCODE_FORMATS = ("jpg", "webp", "png")
# Pillow's own default limit (Image.MAX_IMAGE_PIXELS): about 0.25 GB of RGBA pixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How to turn an upright ``source`` image into the stored one.

    ``scaled``: the size the whole image is resized to (== source when it is not resized);
    ``crop``: (left, top, right, bottom) in the scaled image, or None; ``canvas``: the size of
    the padded output (``border``), or None. ``size``: the stored image's size.
    """

    source: tuple[int, int]
    scaled: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None
    canvas: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        if self.canvas:
            return self.canvas
        if self.crop:
            left, top, right, bottom = self.crop
            return right - left, bottom - top
        return self.scaled

    @property
    def resized(self) -> bool:
        return self.scaled != self.source


def _scale_to(width: int, height: int, side: int, target: int) -> tuple[int, int]:
    """(width, height) scaled so that ``side`` (the smaller or larger of the two) becomes ``target``; never below 1 px."""
    factor = target / side
    return max(1, round(width * factor)), max(1, round(height * factor))


def target_geometry(width: int, height: int, size: int | None, mode: str, only_if_bigger: bool = True) -> Geometry:
    """The geometry of the stored image for an upright ``width`` × ``height`` source.

    ``only_if_bigger``: an image already within the target is never scaled up; ``center_crop``
    still crops it square, ``border`` still pads it to size × size.
    """
    source = (width, height)
    if not size or mode == "no":
        return Geometry(source, source)
    small, large = min(width, height), max(width, height)
    reference = small if mode in ("keep_ratio", "center_crop") else large
    scaled = source if (only_if_bigger and reference <= size) else _scale_to(width, height, reference, size)
    if mode == "center_crop":
        w, h = scaled
        side = min(w, h, size)
        left, top = (w - side) // 2, (h - side) // 2
        crop = (left, top, left + side, top + side)
        return Geometry(source, scaled, crop=None if (side, side) == scaled else crop)
    if mode == "border":
        # Always size × size: an image within the target (not scaled up) is padded all the same.
        canvas = (size, size)
        return Geometry(source, scaled, canvas=None if canvas == scaled else canvas)
    return Geometry(source, scaled)


def border_offset(scaled: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """Where a ``scaled`` image goes on its ``canvas`` so it is centred."""
    return (canvas[0] - scaled[0]) // 2, (canvas[1] - scaled[1]) // 2


def size_filter(width: int, height: int, min_image_size: int, max_aspect_ratio: float) -> tuple[str, str] | None:
    """(status, message) of an image the size filters refuse (0 = a filter is off), else None."""
    small, large = min(width, height), max(width, height)
    if min_image_size and small < min_image_size:
        return Status.FILTERED_TOO_SMALL, f"{width}x{height}: smaller side under --min_image_size {min_image_size}"
    if max_aspect_ratio and (small == 0 or large / small > max_aspect_ratio):
        ratio = large / small if small else float("inf")
        return Status.FILTERED_ASPECT_RATIO, f"{width}x{height}: aspect ratio {ratio:.2f} above --max_aspect_ratio {max_aspect_ratio:g}"
    return None


def check_image_options(image_size: int | None, resize_mode: str, encode_format: str, encode_quality: int,
                        min_image_size: int, max_aspect_ratio: float, max_image_pixels: int) -> None:
    """OptionError naming the first bad image option."""
    if image_size is not None and image_size < 1:
        raise OptionError(f"--image_size must be at least 1 pixel, got {image_size!r}")
    if resize_mode not in RESIZE_MODES:
        raise OptionError(f"--resize_mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    if encode_format not in ENCODE_FORMATS:
        raise OptionError(f"--encode_format must be one of {', '.join(ENCODE_FORMATS)}, got {encode_format!r}")
    if not 1 <= encode_quality <= 100:
        raise OptionError(f"--encode_quality must be between 1 and 100, got {encode_quality!r}")
    if min_image_size < 0:
        raise OptionError(f"--min_image_size must be at least 0, got {min_image_size!r}")
    if max_aspect_ratio and max_aspect_ratio < 1:
        raise OptionError(f"--max_aspect_ratio must be at least 1 (longer side / shorter side), got {max_aspect_ratio!r}")
    if max_image_pixels < 1:
        raise OptionError(f"--max_image_pixels must be at least 1, got {max_image_pixels!r}")
