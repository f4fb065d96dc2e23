"""A pasted photo is an upload by another door: the same decoding checks, and a message for anything else."""

from __future__ import annotations

import base64

from conftest import encoded, synthetic_photos


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def test_a_pasted_png_is_the_photo_it_was():
    import ui

    photos, _ = synthetic_photos()
    photo, problem = ui.read_pasted(data_url(encoded(photos[3])), "image.png")
    assert problem is None and photo.size == photos[3].size


def test_what_is_not_a_pasted_image_is_a_message():
    import ui

    cases = {"data:text/plain,hello": "not a pasted image", "https://example.com/a.png": "not a pasted image",
             "data:image/png;base64,@@@@": "not valid base64", data_url(b"just some text"): "not an image"}
    for given, expected in cases.items():
        photo, problem = ui.read_pasted(given, "pasted image")
        assert photo is None and expected in problem, (given, problem)
    huge = "data:image/png;base64," + "A" * (ui.PASTE_MAX_MB * 2**20 * 4 // 3 + 8)
    assert "at most 25 MB" in ui.read_pasted(huge, "big.png")[1]
