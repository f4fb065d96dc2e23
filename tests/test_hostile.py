"""Hostile input, one test per way it got through before (issue 13): a server path from the browser, a lock kept by
an orphan, silent corruption, text that turns into HTML, repeated DeepFashion lines, memory before size checks,
messages that misled, a hub asked for weights, and crop boxes that broke the search."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import encoded, garment_file_photo, tiny_settings, write_folder_catalogue, write_photo_records
from PIL import Image
from test_sources import problems_of, write_deepfashion

from core import locks
from core.__main__ import main
from core.bench.hostile import deep_tiff, palette_png
from core.catalog.prepare import confine, prepare_catalog
from core.catalog.prepared_layout import load_prepared, prepared_info
from core.catalog.registry import open_catalog
from core.catalog.sources import CatalogError, SourceSpec, parse_tags, read_source
from core.model.runs import CheckpointError, RunDir, load_checkpoint
from core.photo.decode import ImageDecodeError, decode_image, read_image_file
from core.photo.query_steps import QueryError

ROOT = Path(__file__).resolve().parent.parent


def shop(root: Path, **changes) -> Path:
    records = write_photo_records(root)
    for i, change in changes.items():
        records[int(i)].update(change)
    pd.DataFrame(records).to_csv(root / "products.csv", index=False)
    return root / "products.csv"


# ------------------------------------------------------------------------------- 1. the browser reaches one folder
def test_a_path_outside_the_catalogue_folders_is_refused_alike_whether_or_not_it_exists(tmp_path):
    roots = [tmp_path / "catalogs"]
    (tmp_path / "catalogs").mkdir()
    messages = set()
    for path in ("/etc/passwd", "/etc/no-such-file", "/usr/share/pixmaps", str(tmp_path / "catalogs" / ".." / "x")):
        with pytest.raises(CatalogError) as refused:
            confine(SourceSpec(path=path), roots)
        messages.add(str(refused.value))
    assert len(messages) == 1 and "catalogue folders only" in messages.pop()
    (tmp_path / "catalogs" / "link").symlink_to("/usr/share")
    with pytest.raises(CatalogError, match="catalogue folders only"):
        confine(SourceSpec(path=str(tmp_path / "catalogs" / "link")), roots)
    with pytest.raises(CatalogError, match="Image folders must lie inside"):
        confine(SourceSpec(path=str(tmp_path / "catalogs"), allowed_roots=("/",)), roots)


def test_the_page_limits_how_large_a_source_may_be(tmp_path):
    source = write_folder_catalogue(tmp_path / "catalogs" / "shop", per_category=4)  # 12 images
    settings = tiny_settings(tmp_path)
    with pytest.raises(CatalogError, match="more than 5 entries"):
        prepare_catalog(SourceSpec(path=str(source)), settings, confine_to=[tmp_path / "catalogs"], max_items=5)
    with pytest.raises(CatalogError, match="more than 5 entries"):
        prepare_catalog(SourceSpec(path=str(shop(tmp_path / "catalogs" / "table"))), settings, max_items=5)


def test_the_page_does_not_overwrite_a_catalogue_from_another_source(tmp_path):
    settings = tiny_settings(tmp_path)
    first = write_folder_catalogue(tmp_path / "catalogs" / "a", per_category=1)
    second = write_folder_catalogue(tmp_path / "catalogs" / "b", per_category=1)
    prepare_catalog(SourceSpec(path=str(first)), settings, name="shop", photo_size=64)
    with pytest.raises(CatalogError, match="already exists"):
        prepare_catalog(SourceSpec(path=str(second)), settings, name="shop", replace=False)
    prepare_catalog(SourceSpec(path=str(first)), settings, name="shop", photo_size=64, replace=False)  # same: fine


def test_problems_quote_the_image_path_and_no_other_cell(tmp_path):
    path = shop(tmp_path / "shop", **{"1": {"price": "s3cr3t-price"}, "2": {"split": "s3cr3t-split"},
                                      "3": {"id": "shirt-00"}, "4": {"image": ""}})
    source = read_source(SourceSpec(path=str(path)))
    text = json.dumps([p.__dict__ for p in source.problems])
    assert len(source.problems) == 4 and "s3cr3t" not in text and "shirt-00" not in text
    assert "images/shirt-01.jpg" in text  # the path column is the one a person fixes


# ------------------------------------------------------------------------------- 2. locks end with their holder
HOLD_AND_FORK = """
import os, sys, time
from core import locks
with locks.exclusive(sys.argv[1]):
    child = os.fork()
    if child == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1), os.dup2(null, 2)  # let the test read this process's output without waiting for the child
        time.sleep(30)
        os._exit(0)
    print(child, flush=True)
    os.kill(os.getpid(), 9)  # as kill -9 would, with the lock held
"""


def test_a_forked_child_does_not_keep_a_lock_its_killed_parent_held(tmp_path):
    path = tmp_path / "store" / ".lock"
    out = subprocess.run([sys.executable, "-c", HOLD_AND_FORK, str(path)], cwd=ROOT, capture_output=True, text=True)
    child = int(out.stdout.split()[0])
    try:
        assert Path(f"/proc/{child}").exists()  # the orphan lives on…
        with locks.exclusive(path, timeout_s=2):  # …and the lock is free all the same
            pass
    finally:
        os.kill(child, signal.SIGKILL)


EMBED_THEN_WAIT = """
import sys, time
from pathlib import Path
import numpy as np
from core.photo.domain import PhotoDomain
from core.embedding.sequential_runner import read_batches
from core.catalog.item_files import FileImages
paths = np.array(sorted(str(p) for p in Path(sys.argv[1]).rglob("*.jpg")) * 20)
for offset, batch in read_batches(FileImages(paths, None, PhotoDomain(size=32)), 4, workers=2):
    children = Path(f"/proc/{__import__('os').getpid()}/task").glob("*/children")
    print(" ".join(" ".join(c.read_text().split()) for c in children), flush=True)
    time.sleep(60)
"""


def test_dataloader_workers_die_with_their_parent(tmp_path):
    folder = write_folder_catalogue(tmp_path / "photos", per_category=2)
    process = subprocess.Popen([sys.executable, "-c", EMBED_THEN_WAIT, str(folder)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in process.stdout.readline().split()]
    assert len(workers) == 2
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


HOLD = """
import sys, time
from core import locks
with locks.exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_still_held_names_its_holder_after_a_few_seconds(tmp_path, monkeypatch):
    path = tmp_path / "store" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(locks, "NOTIFY_AFTER_S", 0.3)
        heard: list[str] = []
        with pytest.raises(locks.LockBusy, match=f"process {holder.pid}"):
            with locks.exclusive(path, timeout_s=1.5, notify=heard.append):
                pass
        assert heard and f"process {holder.pid}" in heard[0] and "-c" in heard[0]
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------- 3. corruption is noticed
def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_prepared_items_table_is_rebuilt_from_the_source(tmp_path, caplog):
    settings = tiny_settings(tmp_path)
    source = shop(tmp_path / "shop")
    prepare_catalog(SourceSpec(path=str(source)), settings, name="shop", photo_size=64)
    table = settings.artifacts_dir / "catalogs" / "shop" / "items.parquet"
    good = pd.read_parquet(table)
    flip_byte(table, table.stat().st_size // 2)
    catalog = open_catalog(settings.replace(catalog="shop"))
    assert "does not match its checksum" in caplog.text
    pd.testing.assert_frame_equal(catalog.items, good)
    flip_byte(table, table.stat().st_size // 2)
    source.unlink()
    with pytest.raises(CatalogError, match=r"items.parquet is damaged .* could not be rebuilt"):
        open_catalog(settings.replace(catalog="shop"))


def test_a_flipped_byte_inside_a_checkpoint_tensor_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    weights = {"layer.weight": torch.linspace(-1, 1, 4096).reshape(64, 64), "layer.bias": torch.zeros(64)}
    run.save_checkpoint(run.best, {"model": weights, "backbone": "x", "categories": ["a", "b"]})
    assert torch.equal(load_checkpoint(run.best)["model"]["layer.weight"], weights["layer.weight"])
    with zipfile.ZipFile(run.best) as archive:  # torch.save stores tensors uncompressed: find one's bytes
        entry = max(archive.infolist(), key=lambda e: e.file_size)
        start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    flip_byte(run.best, start + entry.file_size // 2)
    torch.load(run.best, weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(run.best)


# ------------------------------------------------------------------------------- 4. text stays text
HOSTILE_TEXT = ("Soft ![pixel](http://tracker.example/p.png) <img src='http://tracker.example/q.png'> "
                "[click](javascript:alert(1)) :red[loud] $x^2$ **bold** &lt;b&gt; https://tracker.example/r.png\n"
                "www.tracker.example me@tracker.example "
                "# heading")


def test_catalogue_text_renders_as_the_text_it_is():
    from markdown_it import MarkdownIt

    import ui

    renderer = MarkdownIt("commonmark", {"linkify": False}).enable("strikethrough")
    for text in (HOSTILE_TEXT, "1. first", "- item", "> quoted", "a_b_c *x*", "=== under"):
        html = renderer.render(ui.plain(text))
        assert html.startswith("<p>") and html.count("<") == 2, html  # one paragraph, no other element
        inner = html[3:-5]
        import html as html_lib

        assert html_lib.unescape(inner).replace(ui.WORD_JOINER, "") == " ".join(text.split())
    assert "&lt;img" in ui.plain_html("<img src=x>")


def test_search_results_show_hostile_descriptions_as_text(tmp_path, monkeypatch):
    from conftest import APP, TIMEOUT
    from markdown_it import MarkdownIt
    from streamlit.testing.v1 import AppTest

    source = shop(tmp_path / "shop", **{str(i): {"description": HOSTILE_TEXT, "brand": "<b>Acme</b>"}
                                        for i in range(12)})
    settings = tiny_settings(tmp_path, catalog="shop")
    prepare_catalog(SourceSpec(path=str(source)), settings, name="shop", photo_size=64)
    for name, value in {"CATALOG": "shop", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32", "PCA_DIM": "16",
                        "PCA_MIN_FIT_ITEMS": "0", "N_TREES": "4", "WORKERS": "0",
                        "ARTIFACTS_DIR": str(settings.artifacts_dir),
                        "DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(f"FVS_{name}", value)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    app.switch_page("app_pages/search.py").run()
    photo = garment_file_photo("Skirt", "navy", np.random.default_rng(3))
    app.file_uploader(key="upload").set_value(("skirt.png", encoded(photo), "image/png")).run()
    assert not app.exception, app.exception
    renderer = MarkdownIt("commonmark").enable("strikethrough")
    shown = [m.value for m in app.markdown] + [c.value for c in app.caption]
    assert any("tracker" in text for text in shown)
    for text in shown:
        html = renderer.render(text)
        assert "<img" not in html and "<a " not in html and "<b>" not in html, text
        # nor a GitHub-style autolink, which Streamlit renders (and markdown-it's CommonMark does not)
        assert not re.search("(?<!\u2060)(://|@)", text) and "www." not in text


# ------------------------------------------------------------------------------- 5. DeepFashion repeats
@pytest.mark.parametrize("relative", ["Anno/list_bbox.txt", "Eval/list_eval_partition.txt",
                                      "Anno/list_category_img.txt"])
def test_an_image_listed_twice_is_a_problem_with_its_file_and_line(tmp_path, relative):
    root = write_deepfashion(tmp_path / "df")
    lines = (root / relative).read_text().splitlines()
    (root / relative).write_text("\n".join([*lines, lines[3]]) + "\n")  # the second image, again at the end
    source = read_source(SourceSpec(path=str(root)))
    assert len(source.items) == 12 and source.items["id"].is_unique
    repeat = [p for p in source.problems if "listed again" in p.problem]
    assert [(p.where, p.problem) for p in repeat] == [(f"{relative} line {len(lines) + 1}",
                                                      "listed again (first on line 4); this line is ignored")]


def test_blank_lines_do_not_shift_deepfashion_line_numbers(tmp_path):
    root = write_deepfashion(tmp_path / "df")
    path = root / "Anno" / "list_category_img.txt"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 1)[0] + " 99"  # line 6: a label that does not exist
    path.write_text("\n".join([*lines[:4], "", *lines[4:]]) + "\n")  # a blank line before it: now line 7
    source = read_source(SourceSpec(path=str(root)))
    assert problems_of(source)["Anno/list_category_img.txt line 7"] == "category label '99' is not 1..3"


# ------------------------------------------------------------------------------- 6. sizes before memory
def test_what_cannot_be_an_image_is_refused_before_it_is_read(tmp_path):
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image_file("/dev/zero")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image_file(fifo)  # opening must not wait for a writer
    sparse = tmp_path / "big.jpg"
    with sparse.open("wb") as fh:
        fh.truncate(3 << 30)  # 3 GB that take no disk: refused by its size, nothing read
    with pytest.raises(ImageDecodeError, match="3072 MB; the limit is 50 MB"):
        read_image_file(sparse)


def test_the_cli_refuses_dev_zero_at_once(capsys):
    started = time.monotonic()
    assert main(["search", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err and time.monotonic() - started < 5


def test_a_sparse_photo_in_a_table_is_listed_not_read(tmp_path):
    source = shop(tmp_path / "shop", **{"0": {"image": "images/big.jpg"}})
    with (tmp_path / "shop" / "images" / "big.jpg").open("wb") as fh:
        fh.truncate(3 << 30)
    report = prepare_catalog(SourceSpec(path=str(source)), tiny_settings(tmp_path), name="shop", photo_size=64)
    assert report.problems["problem"].tolist() == ["big.jpg is 3072 MB; the limit is 50 MB."]


def test_huge_images_are_refused_or_decoded_within_bounds(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError, match=r"\(39 MP\); PNG images up to 16 MP"):
        decode_image(palette_png(tmp_path / "huge.png", 7900, 4950).read_bytes())  # tens of KB; 340 MB a decode
    from core.photo import decode

    inside, most = [0], [0]
    real = decode._large_slots

    class Counting:
        def __enter__(self):
            real.acquire()
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.05)

        def __exit__(self, *exc):
            inside[0] -= 1
            real.release()

    monkeypatch.setattr(decode, "_large_slots", Counting())
    data = palette_png(tmp_path / "large.png", 4000, 3900).read_bytes()  # 15.6 MP: accepted
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        decoded = list(pool.map(lambda _: decode_image(data), range(8)))
    assert all(d.size == (1024, 999) for d in decoded) and most[0] == decode.LARGE_DECODES


def test_a_large_palette_decode_costs_tens_of_megabytes_not_hundreds(tmp_path):
    path = palette_png(tmp_path / "big.png", 4000, 3900)
    script = textwrap.dedent(f"""
        import resource
        from core.photo.decode import decode_image, read_image_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        decode_image(read_image_file({str(path)!r}))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    grown = float(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout)
    assert grown < 100, f"{grown:.0f} MB"


# ------------------------------------------------------------------------------- 7. messages that say what is true
def test_rows_after_a_multi_line_field_keep_their_line_numbers(tmp_path):
    path = tmp_path / "shop"
    records = write_photo_records(path)
    records[1]["description"] = "Line one\nline two\nline three"
    records[3]["image"] = "images/missing.jpg"
    pd.DataFrame(records).to_csv(path / "products.csv", index=False)
    text = (path / "products.csv").read_text()
    (path / "products.csv").write_text(text.replace("\n", "\n\n", 1))  # and a blank line after the header
    source = read_source(SourceSpec(path=str(path / "products.csv")))
    line = next(i for i, row in enumerate((path / "products.csv").read_text().splitlines(), 1)
                if "missing.jpg" in row)
    assert problems_of(source) == {f"line {line}": "image file 'images/missing.jpg' does not exist"}
    assert line == 8  # header, blank, row 1, three lines of row 2, row 3, then this one


def test_a_damaged_catalog_json_is_named_not_a_traceback(tmp_path):
    settings = tiny_settings(tmp_path)
    prepare_catalog(SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1))), settings, name="shop",
                    photo_size=64)
    path = settings.artifacts_dir / "catalogs" / "shop" / "catalog.json"
    good = json.loads(path.read_text())
    for change, expected in (({"categories": None}, "'categories' is missing"),
                             ({"photo_size": "abc"}, "'photo_size' must be a whole number")):
        path.write_text(json.dumps({k: v for k, v in {**good, **change}.items() if v is not None}))
        with pytest.raises(CatalogError, match=f"catalog.json is damaged: {expected}.*python -m core prepare"):
            prepared_info(settings, "shop")
        assert main(["search", str(tmp_path / "shop" / "Shirt" / "00.jpg"), "--catalog", "shop",
                     "--artifacts-dir", str(settings.artifacts_dir)]) == 2


@pytest.mark.parametrize("name", ["nl\n", "x\n", "ok\nrm"])
def test_a_name_with_a_newline_is_refused(tmp_path, name):
    spec = SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1)))
    with pytest.raises(CatalogError, match="not usable"):
        prepare_catalog(spec, tiny_settings(tmp_path), name=name)
    assert not (tmp_path / "artifacts" / "catalogs").exists()


def test_missing_tags_in_a_parquet_list_are_no_tags():
    assert parse_tags(np.array(["a", None, "x", float("nan")], dtype=object)) == ["a", "x"]
    assert parse_tags([None]) == []


# ------------------------------------------------------------------------------- 8. no hub, whatever the flag says
def test_no_hub_is_asked_for_weights_even_with_the_offline_flag_off(monkeypatch, tmp_path):
    import socket

    import huggingface_hub.constants as hub

    from core.model.backbone import WeightsError, create_backbone

    def no_network(*args, **kwargs):
        raise AssertionError(f"network use: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="No offline weights.*timm/resnet18"):
        create_backbone("resnet18")
    # the same weights, once a file in the local cache: loaded from it, still without a connection
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet18", pretrained=False)
    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, snapshot / "model.safetensors")
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("abc123")
    loaded = create_backbone("resnet18", num_classes=1000)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))


# ------------------------------------------------------------------------------- 9. crop boxes
@pytest.mark.parametrize("isolate", [False, True])
def test_bad_crop_boxes_are_clear_errors_and_big_ones_are_clipped(settings, isolate):
    from core.search.workspace import Workspace

    ws = Workspace.open(settings)
    photo = encoded(garment_file_photo("Shirt", "navy", np.random.default_rng(0), size=120))
    for box, message in (((0, 0, 0, 0), "empty or inverted"), ((50, 50, 10, 10), "empty or inverted"),
                         ((500, 500, 900, 900), "less than 8×8"), ((0, 0, 3, 120), "less than 8×8"),
                         ((0, 0, float("nan"), 5), "not finite"), (("a", 1, 2, 3), "four numbers")):
        with pytest.raises(QueryError, match=message):
            ws.search(photo, box=box, isolate=isolate)
    result = ws.search(photo, box=(0, 0, 10**9, 10**9), isolate=isolate)
    assert len(result.hits) == 10 and result.steps.user_box == (0, 0, 120, 120)


# ------------------------------------------------------------------------------- found by an adversarial pass
def test_a_long_table_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bomb = tmp_path / "bomb.parquet"  # 3 million rows in a few KB
    pq.write_table(pa.table({"image": pa.array(["a.jpg"] * 3_000_000)}), bomb, compression="zstd")
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("read the whole table"))
    with pytest.raises(CatalogError, match="more than 50,000 entries"):
        read_source(SourceSpec(path=str(bomb)), max_items=50_000)
    csv_path = tmp_path / "long.csv"  # line 12 is malformed: refused for its length first, so never reached
    csv_path.write_text("image,category\n" + "x.jpg,a\n" * 10 + "x.jpg,a,b,c\n")
    with pytest.raises(CatalogError, match="more than 5 entries"):
        read_source(SourceSpec(path=str(csv_path)), max_items=5)
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(6):
        (loose / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(CatalogError, match="more than 5 entries"):
        read_source(SourceSpec(path=str(loose)), max_items=5)


def test_the_page_lists_sources_without_walking_a_huge_folder(tmp_path):
    from core.catalog.prepare import sources_under

    root = tmp_path / "catalogs"
    (root / "photos").mkdir(parents=True)
    for i in range(50):
        (root / "photos" / f"{i}.csv").write_text("image\n")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    assert len(sources_under([root], scanned=20)) < 20  # the budget, not the folder, sets the work
    assert root / "photos" / "0.csv" in sources_under([root])
    with pytest.raises(CatalogError, match="catalogue folders only"):
        confine(SourceSpec(path=str(root / "loop-a")), [root])


def test_links_out_of_a_folder_catalogue_are_not_followed_nor_described(tmp_path):
    root = write_folder_catalogue(tmp_path / "shop", per_category=1)
    outside = tmp_path / "outside"
    (outside / "big").mkdir(parents=True)
    (outside / "exists.jpg").write_bytes(b"x")
    (root / "Walk").symlink_to(outside / "big")
    (root / "Shirt" / "probe1.jpg").symlink_to(outside / "exists.jpg")
    (root / "Shirt" / "probe2.jpg").symlink_to(outside / "missing.jpg")
    source = read_source(SourceSpec(path=str(root)))
    problems = problems_of(source)
    assert problems["Walk"] == problems["Shirt/probe1.jpg"] == problems["Shirt/probe2.jpg"]
    assert "outside" in problems["Walk"] and str(outside) not in json.dumps(problems)
    assert len(source.items) == 3


@pytest.mark.parametrize("cell", ["b\x00.jpg", "~nosuchuser/a.jpg", "x" * 300 + ".jpg"])
def test_an_unusable_image_cell_is_one_problem_not_a_crash(tmp_path, cell):
    path = shop(tmp_path / "shop", **{"2": {"image": cell}})
    source = read_source(SourceSpec(path=str(path)))
    assert len(source.items) == 11 and list(problems_of(source)) == ["line 4"]


def test_deepfashion_headers_spellings_and_odd_line_breaks(tmp_path):
    root = write_deepfashion(tmp_path / "df")
    labels = root / "Anno" / "list_category_img.txt"
    lines = labels.read_text().split("\n")
    labels.write_text("\n".join([lines[0], "image_name", *lines[2:]]))
    with pytest.raises(CatalogError, match="list_category_img.txt, line 2: expected a header of 2"):
        read_source(SourceSpec(path=str(root)))
    lines[2] = lines[2] + "\x0c"  # a form feed: no line break for an editor, nor here
    lines.append("./" + lines[3].split()[0] + " 1")  # the second image again, spelled another way: line 16
    labels.write_text("\n".join(lines))
    source = read_source(SourceSpec(path=str(root)))
    repeat = [(p.where, p.problem) for p in source.problems if "listed again" in p.problem]
    assert repeat == [("Anno/list_category_img.txt line 16", "listed again (first on line 4); this line is ignored")]
    assert len(source.items) == 12


def test_csv_lines_for_an_unclosed_quote_and_a_lone_carriage_return(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('image,description\na.jpg,"never closed\n' + "b.jpg,x\n" * 50)
    with pytest.raises(CatalogError, match="t.csv, line 2: not a readable CSV"):
        read_source(SourceSpec(path=str(path)))
    path.write_bytes(b'image,description\na.jpg,"one\rtwo"\nmissing.jpg,x\n')
    assert list(problems_of(read_source(SourceSpec(path=str(path))))) == ["line 2", "line 3"]


@pytest.mark.parametrize("change, expected", [({"source": "str"}, "'source' must be an object"),
                                              ({"items": "x"}, "'items' must be a count")])
def test_catalog_json_of_the_wrong_shape_is_named(tmp_path, change, expected):
    from core.catalog.registry import catalog_choices

    settings = tiny_settings(tmp_path)
    prepare_catalog(SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1))), settings, name="shop",
                    photo_size=64)
    path = settings.artifacts_dir / "catalogs" / "shop" / "catalog.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CatalogError, match=expected):
        prepared_info(settings, "shop")
    assert "shop" not in catalog_choices(settings)  # the sidebar lists the others


@pytest.mark.parametrize("categories", [["Scarf"], ["Scarf", "Shirt", "Skrit"]])
def test_catalog_json_and_the_items_must_agree_on_the_categories(tmp_path, categories):
    settings = tiny_settings(tmp_path)
    prepare_catalog(SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1))), settings, name="shop",
                    photo_size=64)
    path = settings.artifacts_dir / "catalogs" / "shop" / "catalog.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "categories": categories}))
    with pytest.raises(CatalogError, match="disagree on the category names"):
        load_prepared(settings, "shop")


@pytest.mark.parametrize("meta", ["[]", '{"files": []}', '{"files": {"embeddings.npy": "x"}}'])
def test_a_meta_json_of_the_wrong_shape_means_rebuild(settings, meta):
    from core.search.workspace import Workspace

    store = Workspace.open(settings).store
    store.meta_path.write_text(meta)
    assert len(Workspace.open(settings).embeddings) == 64


def test_crop_boxes_that_only_look_like_numbers(settings):
    from core.photo.query_steps import checked_box

    for box in ("0099", b"\x00\x0022", (0, 0, 10**400, 50), (True, 0, 50, 50), [0, 0, 50]):
        with pytest.raises(QueryError):
            checked_box(box, 100, 100)
    assert checked_box(np.array([0, 0, 50, 50]), 100, 100) == (0, 0, 50, 50)


def test_checking_a_lock_does_not_take_it(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "train.lock"
    path.write_text("")
    taken = []
    real = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: taken.append(op) or real(fd, op))
    assert not locks.is_locked(path) and taken == []
    with locks.exclusive(path):
        assert locks.is_locked(path)


def test_a_checkpoint_without_its_checksum_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.save_checkpoint(run.best, {"model": {"w": torch.ones(3)}, "backbone": "x"})
    state = torch.load(run.best, weights_only=True)
    state.pop("checksum")
    torch.save(state, run.best)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(run.best)


def test_formats_outside_the_list_are_not_opened():
    icon = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    with pytest.raises(ImageDecodeError, match="not an image file"):
        decode_image(encoded(icon, "ICO"))


def test_a_deep_rotated_tiff_costs_tens_of_megabytes(tmp_path):
    path = deep_tiff(tmp_path / "deep.tif", 4000, 3900)  # stored sideways (EXIF 6)
    script = textwrap.dedent(f"""
        import resource
        from core.photo.decode import decode_image, read_image_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        image = decode_image(read_image_file({str(path)!r}))
        print(image.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    size, grown = out.rsplit(" ", 1)
    assert size == "(998, 1024)" and float(grown) < 150, out  # upright (EXIF 6: 4000 wide becomes 1024 tall)


# ------------------------------------------------------------------------------- found by a second pass
def test_a_wide_header_is_refused_at_once(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("image," + ",".join(f"c{i}" for i in range(40_000)) + "\na.jpg\n")
    started = time.monotonic()
    with pytest.raises(CatalogError, match="40,001 columns; tables of up to 1,000"):
        read_source(SourceSpec(path=str(path)))
    assert time.monotonic() - started < 2


def test_a_long_deepfashion_list_is_refused_while_it_is_read(tmp_path):
    root = write_deepfashion(tmp_path / "df")
    with pytest.raises(CatalogError, match="more than 5 entries"):
        read_source(SourceSpec(path=str(root)), max_items=5)


def test_two_prepares_of_one_name_do_not_both_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    settings = tiny_settings(tmp_path)
    sources = [write_folder_catalogue(tmp_path / "catalogs" / name, per_category=2) for name in ("a", "b")]

    def add(source):
        try:
            return prepare_catalog(SourceSpec(path=str(source)), settings, name="dup", photo_size=64, replace=False)
        except CatalogError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(add, sources))
    assert sum(isinstance(o, CatalogError) and "already exists" in str(o) for o in outcomes) == 1
    kept = prepared_info(settings, "dup")["source"]["path"]
    assert kept == next(str(s) for s, o in zip(sources, outcomes, strict=True) if not isinstance(o, Exception))


def test_a_file_swapped_for_a_link_out_of_the_catalogue_is_not_read(tmp_path):
    settings = tiny_settings(tmp_path)
    source = write_folder_catalogue(tmp_path / "shop", per_category=1)
    prepare_catalog(SourceSpec(path=str(source)), settings, name="shop", photo_size=64)
    outside = tmp_path / "secret.jpg"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(outside)
    catalog = load_prepared(settings, "shop")
    victim = Path(catalog.items["path"][0])
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(ImageDecodeError, match="now links outside"):
        catalog.pixels.photo(0)
    assert np.asarray(catalog.image(0)).mean() > 200  # the blank tile, not the red secret
    assert not catalog.domain_batch([0]).any()


def test_too_many_categories_are_refused_when_prepared(tmp_path, monkeypatch):
    from core.catalog import prepare

    monkeypatch.setattr(prepare, "MAX_CATEGORIES", 2)
    with pytest.raises(CatalogError, match="3 categories; a catalogue may have up to 2"):
        prepare_catalog(SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1))), tiny_settings(tmp_path),
                        name="shop", photo_size=64)


def test_one_photo_reached_through_links_inside_a_folder_is_one_item(tmp_path):
    root = write_folder_catalogue(tmp_path / "shop", per_category=2)
    (root / "Dress").symlink_to(root / "Shirt")
    source = read_source(SourceSpec(path=str(root)))
    assert len(source.items) == 6 and source.items["path"].is_unique
    assert problems_of(source)["Dress/00.jpg"] == "the same image as Shirt/00.jpg"  # the real folder keeps it
    assert set(source.items["category"]) == {"Shirt", "Skirt", "Scarf"}
