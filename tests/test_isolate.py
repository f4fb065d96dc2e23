"""Garment isolation on generated scenes with known masks, the isolated conversion, and the photo benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHAPES, encoded, shape_item, shape_photo, tiny_settings
from PIL import Image, ImageDraw, ImageFilter

from core.__main__ import main
from core.bench.photos import LabelsError, read_labels, run_photo_bench
from core.photo.domain import FashionMnistDomain, PhotoDomain
from core.photo.isolate import isolate
from core.photo.query_steps import prepare_query

GARMENT = [(30, 25), (42, 18), (58, 18), (70, 25), (88, 40), (78, 50), (70, 44), (70, 88), (30, 88), (30, 44),
           (22, 50), (12, 40)]  # a T-shirt, in a 100×100 frame


def garment_mask(size: tuple[int, int], scale: float = 1.0, offset=(0, 0)) -> np.ndarray:
    w, h = size
    s = min(w, h) / 100 * scale
    ox, oy = (w - 100 * s) / 2 + offset[0], (h - 100 * s) / 2 + offset[1]
    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).polygon([(ox + x * s, oy + y * s) for x, y in GARMENT], fill=255)
    return np.asarray(image) > 127


def wood(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A textured floor: warm planks with grain, the kind of background flat-lays are shot on."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    grain = np.sin(xx / 3.0 + 4 * np.sin(yy / 25.0)) * 18 + rng.normal(0, 8, (h, w))
    planks = ((yy // 60) % 2) * 25
    base = np.stack([190 + grain + planks, 140 + grain * 0.8 + planks, 95 + grain * 0.5 + planks], axis=2)
    return np.clip(base, 0, 255)


def scene(background: np.ndarray, mask: np.ndarray, colour, rng: np.random.Generator) -> Image.Image:
    """The garment (a printed cloth: its colour with a little texture) composited on a background."""
    cloth = np.array(colour, float) + rng.normal(0, 6, (*mask.shape, 3))
    pixels = np.where(mask[..., None], cloth, background)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("seed, colour", [(0, (25, 35, 90)), (1, (180, 30, 40)), (2, (40, 120, 60))])
def test_a_garment_on_a_textured_floor_is_isolated(seed, colour):
    rng = np.random.default_rng(seed)
    size = (360, 300)
    truth = garment_mask(size, scale=0.9)
    found = isolate(scene(wood(size, rng), truth, colour, rng))
    assert found.found and iou(found.mask, truth) >= 0.8


def test_a_garment_worn_by_a_person_like_shape_is_isolated():
    """Head, neck and arms in skin tones around the garment, on a plain wall: the garment alone is kept."""
    rng = np.random.default_rng(3)
    size = (300, 360)
    wall = np.full((size[1], size[0], 3), (222, 218, 210), float)
    person = Image.new("L", size, 0)
    draw = ImageDraw.Draw(person)
    draw.ellipse([120, 0, 180, 70], fill=255)  # head
    draw.rectangle([138, 60, 162, 110], fill=255)  # neck
    draw.rectangle([20, 100, 60, 330], fill=255)  # arms
    draw.rectangle([240, 100, 280, 330], fill=255)
    skin = np.asarray(person) > 127
    background = np.where(skin[..., None], np.array((224, 172, 140), float), wall)
    truth = garment_mask(size, scale=1.05, offset=(0, 25))
    found = isolate(scene(background, truth, (30, 60, 150), rng))
    assert found.found and iou(found.mask, truth) >= 0.8
    assert not (found.mask & skin & ~truth).any(axis=None) or (found.mask & skin & ~truth).mean() < 0.01


def test_a_box_from_the_user_picks_one_garment_of_two():
    rng = np.random.default_rng(4)
    size = (480, 240)
    left, right = garment_mask(size, 0.8, offset=(-120, 0)), garment_mask(size, 0.8, offset=(120, 0))
    background = np.full((size[1], size[0], 3), 235.0)
    photo = scene(np.asarray(scene(background, left, (180, 30, 40), rng), float), right, (30, 40, 160), rng)
    found = isolate(photo, box=(250, 0, 480, 240))
    assert found.found and iou(found.mask, right) >= 0.8 and not (found.mask & left).any()


def test_a_white_garment_on_white_stays_visible_after_conversion():
    rng = np.random.default_rng(5)
    size = (300, 300)
    truth = garment_mask(size, 0.9)
    photo = scene(np.full((300, 300, 3), 246.0) + rng.normal(0, 3, (300, 300, 3)), truth, (236, 236, 232), rng)
    domain = FashionMnistDomain()
    steps = prepare_query(photo, domain)
    silhouette = domain.convert_isolated(photo, isolate(photo, box=(10, 10, 290, 290)))
    for query in (steps.query, silhouette):
        assert (query > 40).mean() > 0.25  # the shirt fills a good part of the 28×28 query…
        assert query[query > 40].mean() >= 60  # …at an intensity a catalogue item would have
    plain = domain.convert(photo)
    assert (plain > 40).mean() < 0.1  # what the plain recipe makes of it: almost nothing


def test_a_fashion_mnist_like_image_passes_through_unchanged():
    item = shape_item("Disc", np.random.default_rng(0))
    steps = prepare_query(Image.fromarray(item).convert("RGB"), FashionMnistDomain())
    assert steps.isolation is None
    np.testing.assert_array_equal(steps.query, item)


def test_isolation_off_or_nothing_found_falls_back_to_the_plain_recipe():
    photo = shape_photo("Square", np.random.default_rng(1), size=200)
    domain = FashionMnistDomain()
    np.testing.assert_array_equal(prepare_query(photo, domain, isolate_garment=False).query, domain.convert(photo))
    blank = Image.new("RGB", (200, 200), (250, 250, 250))
    steps = prepare_query(blank, domain)
    assert not steps.isolation.found and steps.box is None
    np.testing.assert_array_equal(steps.query, domain.convert(blank))


def test_photo_catalogues_get_the_garment_cut_out_on_white():
    rng = np.random.default_rng(6)
    truth = garment_mask((320, 320), 0.9)
    photo = scene(wood((320, 320), rng), truth, (30, 40, 140), rng)
    query = prepare_query(photo, PhotoDomain(64)).query
    corners = np.concatenate([query[:4, :4], query[-4:, -4:]]).reshape(-1, 3)
    assert corners.min() > 240  # white where the floor was


# ------------------------------------------------------------------------------------------ the benchmark
@pytest.fixture
def labelled(tmp_path):
    """Photos of the synthetic catalogue's shapes, labelled with the right and a wrong category."""
    rng = np.random.default_rng(9)
    lines = ["file,accepted"]
    for i, kind in enumerate(SHAPES):
        shape_photo(kind, rng, size=150).save(tmp_path / f"{kind.lower()}.jpg")
        accepted = kind if i < 3 else SHAPES[0]  # the ring is labelled as a square: it must score 0 there
        lines.append(f"{kind.lower()}.jpg,{accepted}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_the_photo_benchmark_counts_accepted_neighbours(labelled, shared_workspace, tmp_path):
    figures, sheet = run_photo_bench(shared_workspace, labelled, isolate=False)
    rows = {r["file"]: r for r in figures["per_photo"]}
    for name in ("square.jpg", "disc.jpg", "bar.jpg"):
        result = shared_workspace.search(Image.open(labelled / name).convert("RGB"), k=10, exact=True,
                                         isolate=False)
        expected = float(np.mean(result.hits["category"] == name.split(".")[0].capitalize()))
        assert rows[name]["top10_accepted"] == pytest.approx(expected, abs=1e-3)
    assert rows["ring.jpg"]["top10_accepted"] <= 0.2 and rows["ring.jpg"]["vote_correct"] is False
    assert figures["top10_accepted"] == pytest.approx(np.mean([r["top10_accepted"] for r in rows.values()]),
                                                      abs=1e-3)
    assert sheet.size == (7 * 118, 4 * 134)  # photo, query and top 5 per line, one line per photo


def test_the_photo_benchmark_command_writes_json_and_a_contact_sheet(labelled, tmp_path, capsys):
    settings = tiny_settings(tmp_path)
    out = tmp_path / "out" / "photos.json"
    code = main(["bench", "photos", str(labelled), "--json", "--output", str(out), "--isolate", "--catalog",
                 "synthetic", "--backbone", "test_efficientnet", "--image-size", "32", "--pca-dim", "16",
                 "--pca-min-fit-items", "0", "--n-trees", "4", "--artifacts-dir", str(settings.artifacts_dir)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["photos"] == 4 and json.loads(out.read_text()) == printed
    assert printed["isolate"] is True and (tmp_path / "out" / "photos.png").is_file()


@pytest.mark.parametrize("content, message", [
    ("name,label\nsquare.jpg,Square\n", "line 1: the header must be `file,accepted`"),
    ("file,accepted\nsquare.jpg\n", "line 2: expected `file,accepted`"),
    ("file,accepted\nsquare.jpg,Sweater\n", "line 2: 'Sweater' is not a category of this catalogue"),
    ("file,accepted\nmissing.jpg,Square\n", "line 2: there is no photo 'missing.jpg'"),
    ("file,accepted\n../square.jpg,Square\n", "line 2: '../square.jpg' is outside the folder"),
    ("file,accepted\nsquare.jpg,Square\nsquare.jpg,Disc\n", "line 3: 'square.jpg' is listed twice"),
    ("file,accepted\n", "lists no photos"),
])
def test_bad_labels_files_get_a_clear_error(labelled, content, message):
    (labelled / "labels.csv").write_text(content)
    with pytest.raises(LabelsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_labels(labelled, SHAPES)


def test_a_folder_without_labels_says_what_to_write(tmp_path):
    with pytest.raises(LabelsError, match="has no labels.csv.*file,accepted"):
        read_labels(tmp_path, SHAPES)
    with pytest.raises(LabelsError, match="nowhere is not a folder"):
        read_labels(tmp_path / "nowhere", SHAPES)
    (tmp_path / "labels.csv").write_text("file,accepted\n")
    with pytest.raises(LabelsError, match="is not a folder \\(it is a file"):
        read_labels(tmp_path / "labels.csv", SHAPES)


def test_a_tight_or_shifted_box_still_finds_the_garment():
    """A box drawn tight leaves part of the garment outside: it must not become "certain background"."""
    rng = np.random.default_rng(8)
    size = (320, 320)
    truth = garment_mask(size, 0.95)
    photo = scene(wood(size, rng), truth, (30, 90, 100), rng)
    rows, cols = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
    tight = (int(cols[0]) + 12, int(rows[0]) + 12, int(cols[-1]) - 12, int(rows[-1]) - 12)
    found = isolate(photo, box=tight)
    inside = np.zeros_like(truth)
    inside[tight[1] : tight[3], tight[0] : tight[2]] = True
    assert found.found and iou(found.mask, truth & inside) >= 0.8


def test_search_with_an_upload_can_isolate_and_crop(shared_workspace):
    photo = shape_photo("Disc", np.random.default_rng(2), size=200)
    plain = shared_workspace.search(encoded(photo), k=3, isolate=False)
    assert plain.steps.isolation is None
    boxed = shared_workspace.search(encoded(photo), k=3, isolate=True, box=(40, 40, 160, 160))
    assert boxed.steps.isolation is not None and boxed.steps.user_box == (40, 40, 160, 160)
    assert shared_workspace.isolates is False  # auto: ImageNet-style features are not isolated by default


# ------------------------------------------------------------------------------------------ in the app
from test_app import search_page, upload  # noqa: E402 - page helpers


def captions(app) -> list[str]:
    return [caption for image in app.get("image") for caption in image.captions if caption]


def test_the_search_page_shows_each_step_and_can_isolate(app):
    search_page(app)
    rng = np.random.default_rng(7)
    truth = garment_mask((300, 300), 0.9)
    photo = scene(wood((300, 300), rng), truth, (25, 35, 90), rng)
    upload(app, "flatlay.png", encoded(photo))
    assert app.toggle(key="isolate").value is False  # auto: not for ImageNet-style features
    assert captions(app)[:2] == ["Your photo", "As the catalogue sees it"]
    app.toggle(key="isolate").set_value(True).run()
    assert not app.exception, app.exception
    assert captions(app)[:3] == ["Your photo", "The garment found", "As the catalogue sees it"]
    app.toggle(key="adjust_crop").set_value(True).run()  # the cropper renders; without a drag the box is kept
    assert not app.exception, app.exception


def test_the_model_page_measures_a_folder_of_photos(app, labelled, monkeypatch):
    monkeypatch.setenv("FVS_CATALOG_ROOTS", str(labelled.parent))  # the operator allows the folder
    app.run()
    app.switch_page("app_pages/model.py").run()
    app.text_input(key="photo_folder").set_value(str(labelled))
    app.button(key="photo_run").click().run()
    assert not app.exception, app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Photos"] == "4" and metrics["Top 10 in an accepted category"].endswith("%")
    per_photo = next(d.value for d in app.dataframe if "top10_accepted" in d.value.columns)
    assert sorted(per_photo["file"]) == ["bar.jpg", "disc.jpg", "ring.jpg", "square.jpg"]
    (labelled / "labels.csv").write_text("file,accepted\nsquare.jpg,Sweater\n")
    app.button(key="photo_run").click().run()
    assert any("'Sweater' is not a category" in e.value for e in app.error)
    refusals = set()
    for outside in ("/root", "/root/.bashrc", "/no/such/folder", "~nosuchuser", "relative/path"):
        app.text_input(key="photo_folder").set_value(outside)
        app.button(key="photo_run").click().run()
        assert not app.exception, app.exception
        refusals |= {e.value for e in app.error}
    assert len(refusals) == 1 and "catalogue folders only" in refusals.pop()  # nothing tells them apart


def test_an_unknown_isolate_mode_is_a_clear_error(tmp_path):
    """Refused when the settings are made (FVS_ISOLATE, a flag or code), before any workspace opens."""
    with pytest.raises(ValueError, match="isolate must be one of auto, on, off, not 'sometimes'.*FVS_ISOLATE"):
        tiny_settings(tmp_path, isolate="sometimes")
