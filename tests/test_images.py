"""Every kind of bad or unusual upload gets a clear message or a correct image, never a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.photo.decode import ImageDecodeError, decode_image


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 20000×20000 grayscale PNG of zeros: ~400 KB on disk, 400 MB once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_text_file_named_jpg_is_refused_with_a_reason():
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"name,price\nshirt,10\n", name="catalogue.jpg")


def test_empty_file_is_refused():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", name="empty.png")


def test_truncated_jpeg_is_refused():
    data = encode(Image.new("RGB", (400, 400), (200, 30, 30)).effect_spread(5), "JPEG")
    with pytest.raises(ImageDecodeError, match="damaged or incomplete"):
        decode_image(data[: len(data) // 2], name="half.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(bomb_png(), name="bomb.png")


def test_image_just_over_our_limit_is_refused_with_its_size():
    with pytest.raises(ImageDecodeError, match="9000×5000"):
        decode_image(bomb_png(9000, 5000), name="big.png")


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red in CMYK
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    r, g, b = np.asarray(image)[32, 32]
    assert image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_transparent_png_is_flattened_on_white():
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    rgba.paste((10, 10, 200, 255), (20, 20, 30, 30))
    pixels = np.asarray(decode_image(encode(rgba, "PNG")))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[25, 25]) == (10, 10, 200)


def test_16_bit_png_is_rescaled_not_clipped():
    deep = np.zeros((20, 20), dtype=np.uint16)
    deep[:, 10:] = 32768  # mid-gray in 16 bits; clipping would make it white
    pixels = np.asarray(decode_image(encode(Image.fromarray(deep), "PNG")))
    assert pixels[0, 0, 0] == 0
    assert 120 <= pixels[0, 15, 0] <= 136


def test_palette_gif_keeps_its_colours():
    rgb = Image.new("RGB", (30, 30), (255, 255, 255))
    rgb.paste((0, 128, 0), (0, 0, 15, 30))
    pixels = np.asarray(decode_image(encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")))
    assert tuple(pixels[10, 5]) == (0, 128, 0)
    assert tuple(pixels[10, 25]) == (255, 255, 255)


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """Pixels stored rotated 90°, with EXIF orientation 6 telling viewers to rotate them back (as phones do)."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_rotation_is_applied():
    upright = Image.new("RGB", (60, 100), (255, 255, 255))
    upright.paste((0, 0, 0), (0, 0, 60, 30))  # dark band at the top
    image = decode_image(exif_rotated_jpeg(upright))
    pixels = np.asarray(image)
    assert image.size == (60, 100)
    assert pixels[5, 30].mean() < 40 and pixels[95, 30].mean() > 215


def test_large_photos_are_decoded_at_a_working_size():
    from core.photo.decode import WORKING_SIZE

    big = Image.new("RGB", (4000, 3000), (240, 240, 240))
    image = decode_image(encode(big, "JPEG", quality=80))
    assert max(image.size) == WORKING_SIZE and image.size[0] > image.size[1]


def test_malformed_metadata_is_a_message_not_a_traceback(monkeypatch):
    from core.photo import decode

    def broken(image):
        raise KeyError("bad EXIF tag")

    monkeypatch.setattr(decode.ImageOps, "exif_transpose", broken)
    with pytest.raises(ImageDecodeError, match="could not be read"):
        decode_image(encode(Image.new("RGB", (32, 32)), "PNG"))
