"""Training-ready images: upright pixels, resizing, re-encoding, metadata, decode checks, filters (io/images.py).

Unit tests call ``prepare`` on images made with Pillow (testing/images.py); the pipeline tests
fetch them from the local media server (127.0.0.1 only).
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from beam_gbif.core.image_metadata import strip_jpeg
from beam_gbif.core.records import Status
from beam_gbif.io.images import ImageSettings, Rejected, prepare
from beam_gbif.testing.images import GPS_IFD, bomb_png, make_image, marker_corner

JPEG = ("jpg", "image/jpeg")
PNG = ("png", "image/png")


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("mode", ["keep_ratio_largest", "no"])
def test_exif_orientations_come_out_upright(orientation, mode):
    body = make_image(300, 200, "jpg", orientation=orientation, gps=True)
    stored_raw = opened(body)
    assert stored_raw.size == ((200, 300) if orientation in (6, 8) else (300, 200))
    if orientation != 1:
        assert marker_corner(stored_raw) != "top-left", "the stand-in stores the scene sideways or upside down"
    ready = prepare(body, *JPEG, ImageSettings(image_size=150, resize_mode=mode))
    image = opened(ready.body)
    assert marker_corner(image) == "top-left"  # the pixels, not just a tag
    assert image.size == (ready.width, ready.height) == ((150, 100) if mode != "no" else (300, 200))
    assert (ready.original_width, ready.original_height) == (300, 200)


def test_re_encoded_images_carry_no_exif_xmp_or_gps():
    body = make_image(300, 200, "jpg", orientation=6, gps=True)
    assert opened(body).getexif().get_ifd(GPS_IFD)  # the source has GPS tags
    for fmt in ("jpg", "png", "webp"):
        ready = prepare(body, *JPEG, ImageSettings(image_size=100, encode_format=fmt))
        image = opened(ready.body)
        assert ready.ext == fmt and image.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        assert dict(image.getexif()) == {} and not image.getexif().get_ifd(GPS_IFD)
        assert b"Exif" not in ready.body and b"http://ns.adobe.com/xap" not in ready.body


def test_images_already_small_are_re_encoded_but_never_upscaled():
    body = make_image(120, 90, "png", gps=True)
    ready = prepare(body, *PNG, ImageSettings(image_size=256))
    assert (ready.width, ready.height, ready.ext) == (120, 90, "jpg")
    assert prepare(body, *PNG, ImageSettings(image_size=256, resize_only_if_bigger=False)).width == 256


def test_border_pads_with_black_centred_and_center_crop_is_square():
    body = make_image(400, 200, "png")
    bordered = opened(prepare(body, *PNG, ImageSettings(image_size=100, resize_mode="border", encode_format="png")).body)
    assert bordered.size == (100, 100)
    assert bordered.getpixel((50, 10)) == (0, 0, 0) and bordered.getpixel((50, 90)) == (0, 0, 0)  # bands above and below
    assert bordered.getpixel((50, 50)) != (0, 0, 0)
    cropped = opened(prepare(body, *PNG, ImageSettings(image_size=100, resize_mode="center_crop", encode_format="png")).body)
    assert cropped.size == (100, 100)


def test_strip_metadata_on_originals_keeps_pixels_and_orientation_only():
    body = make_image(300, 200, "jpg", orientation=6, gps=True)
    ready = prepare(body, *JPEG, ImageSettings(strip_metadata=True))
    assert ready.ext == "jpg" and len(ready.body) < len(body)
    exif = opened(ready.body).getexif()
    assert dict(exif) == {0x0112: 6} and not exif.get_ifd(GPS_IFD)
    scan = body.index(b"\xff\xda")
    assert ready.body.endswith(body[scan:]), "lossless: the compressed scan is kept byte for byte"
    assert opened(ready.body).tobytes() == opened(body).tobytes()
    assert prepare(body, *JPEG, ImageSettings()).body == body  # without the option, the original is stored as fetched
    png = make_image(300, 200, "png", orientation=8, gps=True)
    stripped = opened(prepare(png, *PNG, ImageSettings(strip_metadata=True)).body)
    assert dict(stripped.getexif()) == {0x0112: 8} and stripped.tobytes() == opened(png).tobytes()
    assert strip_jpeg(make_image(30, 20, "jpg"), 1).count(b"Exif") == 0


def test_cmyk_jpeg_becomes_rgb_and_palette_alpha_png_keeps_or_flattens_alpha():
    cmyk = make_image(200, 100, "jpg", mode="CMYK")
    assert opened(cmyk).mode == "CMYK"
    rgb = opened(prepare(cmyk, *JPEG, ImageSettings(image_size=100)).body)
    assert rgb.mode == "RGB" and marker_corner(rgb) == "top-left"
    paletted = make_image(200, 100, "png", mode="PA")
    assert opened(paletted).mode == "P" and "transparency" in opened(paletted).info
    as_png = opened(prepare(paletted, *PNG, ImageSettings(image_size=100, encode_format="png")).body)
    assert as_png.mode == "RGBA" and as_png.getpixel((90, 45))[3] == 0 and as_png.getpixel((5, 5))[3] == 255
    as_webp = opened(prepare(paletted, *PNG, ImageSettings(image_size=100, encode_format="webp")).body)
    assert as_webp.mode == "RGBA" and as_webp.getpixel((90, 45))[3] == 0
    as_jpeg = opened(prepare(paletted, *PNG, ImageSettings(image_size=100)).body)
    assert as_jpeg.mode == "RGB" and min(as_jpeg.getpixel((90, 45))) > 240  # flattened onto white
    grey = opened(prepare(make_image(64, 48, "png", mode="L"), *PNG, ImageSettings(image_size=32)).body)
    assert grey.mode == "L"


def test_a_cut_body_that_sniffs_fine_fails_to_decode():
    body = make_image(400, 300, "jpg")
    for cut in (body[: len(body) * 2 // 3], make_image(400, 300, "png")[:-40]):
        ext = ("png", "image/png") if cut.startswith(b"\x89PNG") else JPEG
        for settings in (ImageSettings(), ImageSettings(image_size=64)):
            with pytest.raises(Rejected) as caught:
                prepare(cut, *ext, settings)
            assert caught.value.status == Status.FAILED_DECODE
    assert prepare(body[: len(body) // 2], *JPEG, ImageSettings(validate_images=False)).body == body[: len(body) // 2]


def test_a_bad_png_chunk_fails_to_decode():
    body = bytearray(make_image(64, 48, "png"))
    idat = body.index(b"IDAT")
    body[idat + 12] ^= 0xFF  # a byte of the compressed data: the chunk's CRC no longer matches
    with pytest.raises(Rejected) as caught:
        prepare(bytes(body), *PNG, ImageSettings())
    assert caught.value.status == Status.FAILED_DECODE


def test_a_decompression_bomb_is_refused_from_its_header():
    started = time.monotonic()
    for settings in (ImageSettings(), ImageSettings(image_size=256)):
        with pytest.raises(Rejected) as caught:
            prepare(bomb_png(), *PNG, settings)
        assert caught.value.status == Status.FAILED_DECODE and "--max_image_pixels" in caught.value.message
    assert time.monotonic() - started < 1.0, "10^10 pixels were never decoded"
    with pytest.raises(Rejected):
        prepare(make_image(300, 200, "jpg"), *JPEG, ImageSettings(max_image_pixels=300 * 200 - 1))


def test_tiny_and_panorama_images_are_filtered_with_or_without_image_size():
    for settings in (ImageSettings(min_image_size=50, max_aspect_ratio=3), ImageSettings(image_size=64, min_image_size=50,
                                                                                         max_aspect_ratio=3)):
        with pytest.raises(Rejected) as tiny:
            prepare(make_image(60, 40, "jpg"), *JPEG, settings)
        with pytest.raises(Rejected) as panorama:
            prepare(make_image(800, 200, "jpg"), *JPEG, settings)
        assert (tiny.value.status, panorama.value.status) == (Status.FILTERED_TOO_SMALL, Status.FILTERED_ASPECT_RATIO)
    # orientation 6: a 200 × 800 stored image is an 800 × 200 panorama as displayed; the filter sees it upright either way
    with pytest.raises(Rejected):
        prepare(make_image(800, 200, "jpg", orientation=6), *JPEG, ImageSettings(max_aspect_ratio=3))


def test_other_media_are_stored_as_fetched():
    assert prepare(b"fLaC-not-an-image", "flac", "audio/flac", ImageSettings(image_size=64)).body == b"fLaC-not-an-image"
