"""Faults a real deployment meets (issue 29): a full disk, read-only artifacts, hostile image shapes, absurd values,
and errors that must reach the server log rather than the visitor."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import encoded, tiny_settings, write_photo_records
from PIL import Image

from core.catalog.prepare import prepare_catalog
from core.catalog.sources import SourceSpec, compact_number, parse_price
from core.photo.decode import ImageShapeError, decode_image

ROOT = Path(__file__).resolve().parent.parent


def odd_shop(root: Path, **extra_columns) -> Path:
    """A small table catalogue plus a 1×1 dot and a 20000×20 strip (both decodable, neither a garment photo)."""
    records = write_photo_records(root, per_category=2)
    for name, size in {"dot.png": (1, 1), "strip.png": (20000, 20)}.items():
        Image.new("RGB", size, (30, 40, 110)).save(root / "images" / name)
        records.append({"id": name[:-4], "image": f"images/{name}", "category": "Shirt", "colour": "navy",
                        "brand": "Acme", "price": "10", "description": "navy"})
    for column, values in extra_columns.items():
        for record, value in zip(records, values, strict=False):
            record[column] = value
    pd.DataFrame(records).to_csv(root / "products.csv", index=False)
    return root / "products.csv"


# ------------------------------------------------------------------------------- 4. shapes, not only pixels
@pytest.mark.parametrize("size", [(4000, 1), (1, 1), (2000, 60)])
def test_a_query_of_an_extreme_shape_is_refused_with_its_size(size):
    with pytest.raises(ImageShapeError, match=f"{size[0]}×{size[1]} pixels"):
        decode_image(encoded(Image.new("RGB", size, (30, 40, 110))))
    assert decode_image(encoded(Image.new("RGB", (400, 20)))).size == (400, 20)  # 20:1 is still a photo


STRIP_MEMORY = """
import io, resource, sys
from PIL import Image
from core.photo.decode import decode_image
from core.photo.domain import PhotoDomain
buffer = io.BytesIO()
Image.new("RGB", (int(sys.argv[1]), int(sys.argv[2])), (30, 40, 110)).save(buffer, "PNG")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
PhotoDomain(224).convert(decode_image(buffer.getvalue(), odd_shapes="pad"))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_kept_strip_costs_what_a_photo_costs_not_hundreds_of_megabytes():
    """Before: a 4000×1 PNG became 262,144×256 pixels in the model's resize, +270 MB a search."""
    def grown(width: int, height: int) -> float:
        return float(subprocess.run([sys.executable, "-c", STRIP_MEMORY, str(width), str(height)], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout)

    strip = grown(4000, 1)
    assert strip <= 20, f"+{strip:.1f} MB for a 4000×1 strip"


def test_degenerate_catalogue_images_are_listed_and_left_out_unless_kept(tmp_path):
    source = odd_shop(tmp_path / "shop")
    report = prepare_catalog(SourceSpec(path=str(source)), tiny_settings(tmp_path), name="odd")
    listed = report.problems.set_index("entry")
    assert {"images/dot.png", "images/strip.png"} <= set(listed.index)  # quoted as the table gives them
    assert "1×1 pixels" in listed.loc["images/dot.png", "problem"]
    assert "20000×20" in listed.loc["images/strip.png", "problem"]
    assert not report.items["id"].isin(["dot", "strip"]).any()
    kept = prepare_catalog(SourceSpec(path=str(source)), tiny_settings(tmp_path), name="odd-kept",
                           keep_odd_shapes=True)
    assert kept.items["id"].isin(["dot", "strip"]).sum() == 2 and kept.problems.empty


# ------------------------------------------------------------------------------- 1. a full disk is an error
def tiny_tmpfs(where: Path, size: str) -> Path:
    """A real filesystem of ``size`` (root only: the test is skipped without one)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    return where


@pytest.fixture
def tiny_disk(tmp_path):
    where = tiny_tmpfs(tmp_path / "tiny", "256k")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


FEATURES_ON_A_FULL_DISK = """
import sys
import numpy as np
from core.embedding.sequential_runner import SequentialRunner

class Embedder:  # the runner's interface, at a size that overflows the disk: a real network adds nothing here
    feature_dim, network = 4096, None
    def features(self, batch):
        return np.ones((len(batch), 4096), np.float32)

try:
    SequentialRunner(Embedder(), batch_size=16).run(np.zeros((64, 2, 2), np.uint8), out=sys.argv[1])
except OSError as exc:
    print("OSError", exc.errno)
"""


def test_a_memory_mapped_features_file_on_a_full_disk_is_an_error_not_sigbus(tiny_disk):
    """Before: the first page written past the end of the space killed the process with SIGBUS (exit 135)."""
    out = tiny_disk / "features.partial.npy"  # 64 × 4096 floats = 1 MB on a 256 KB disk
    done = subprocess.run([sys.executable, "-c", FEATURES_ON_A_FULL_DISK, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"OSError {errno.ENOSPC}", (done.returncode, done.stderr)
    assert not out.exists()  # nothing half-allocated left to be trusted


@pytest.mark.slow
def test_the_cli_says_which_folder_is_full_and_how_much_a_build_needs(tiny_disk, tmp_path):
    source = odd_shop(tmp_path / "shop")
    env = {**os.environ, "FVS_ARTIFACTS_DIR": str(tiny_disk / "art"), "FVS_BACKBONE": "test_efficientnet",
           "FVS_IMAGE_SIZE": "32", "FVS_PCA_DIM": "16", "FVS_N_TREES": "4"}
    (tiny_disk / "filler").write_bytes(b"\0" * (200 << 10))  # leaves room for the catalogue, not its index
    done = subprocess.run([sys.executable, "-m", "core", "prepare", str(source), "--name", "tiny", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    said = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and str(tiny_disk / "art") in said and re.search(r"needs about [\d.]+ [KM]B", said), \
        done.stderr[-2000:]


def test_running_out_of_space_part_way_names_the_folder_and_a_resumed_build_is_identical(tmp_path, monkeypatch):
    from core import artifacts
    from core.search import workspace as ws_module

    real_save = ws_module.save_npy

    def full_disk_at_the_vectors(path, array):  # the features are written; the disk fills as the vectors go out
        if Path(path).name == "embeddings.npy":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    settings = tiny_settings(tmp_path / "full")
    monkeypatch.setattr(ws_module, "save_npy", full_disk_at_the_vectors)
    with pytest.raises(artifacts.DiskFullError) as raised:
        ws_module.Workspace.open(settings)
    assert str(settings.artifacts_dir) in str(raised.value) and "needs about" in str(raised.value)
    assert "/" not in raised.value.visitor_message()  # what a visitor sees names no server folder
    monkeypatch.setattr(ws_module, "save_npy", real_save)
    resumed = ws_module.Workspace.open(settings)
    clean = ws_module.Workspace.open(tiny_settings(tmp_path / "clean"))
    assert np.array_equal(np.asarray(resumed.embeddings), np.asarray(clean.embeddings))


def test_the_search_page_says_the_disk_is_full_and_retries_when_asked(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.search import workspace as ws_module

    for name, value in {"CATALOG": "synthetic", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32",
                        "PCA_DIM": "16", "N_TREES": "4", "SEARCH_K": "200", "ARTIFACTS_DIR": str(tmp_path / "art"),
                        "DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(f"FVS_{name}", value)
    real_build = ws_module.AnnoySearcher.build

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ws_module.AnnoySearcher, "build", staticmethod(full_disk))
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    app.run()
    app.switch_page("app_pages/search.py").run()
    assert not app.exception
    shown = " ".join(e.value for e in app.error)
    assert "disk is full" in shown and str(tmp_path) not in shown
    monkeypatch.setattr(ws_module.AnnoySearcher, "build", staticmethod(real_build))
    app.button(key="retry_build").click().run()
    assert not app.exception and not app.error


# ------------------------------------------------------------------------------- 2. read-only serving
@pytest.fixture
def read_only(tmp_path):
    """A function making a read-only copy of a folder: a read-only bind mount as root (root writes through
    ``chmod -w``), ``chmod -w`` otherwise."""
    mounts = []

    def copy(folder: Path) -> Path:
        target = tmp_path / f"{folder.name}-ro"
        shutil.copytree(folder, target, symlinks=True)
        if os.geteuid() == 0:
            subprocess.run(["mount", "--bind", str(target), str(target)], check=True)
            mounts.append(target)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        else:
            for path in [target, *target.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
        with pytest.raises(OSError):
            (target / "probe").write_text("")
        return target

    yield copy
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=False)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if not path.is_symlink() and path.exists() and not any(path.is_relative_to(m) for m in mounts):
            path.chmod(path.stat().st_mode | 0o200)


def test_prepared_artifacts_on_a_read_only_folder_are_served(tmp_path, read_only, capsys):
    from core.__main__ import main
    from core.artifacts import ReadOnlyArtifacts
    from core.search.workspace import Workspace

    Workspace.open(tiny_settings(tmp_path / "rw"))
    served = tiny_settings(tmp_path, artifacts_dir=read_only(tmp_path / "rw" / "artifacts"))
    ws = Workspace.open(served)
    assert ws.read_only and ws.describe()["read_only"]
    assert len(ws.search(encoded(Image.new("RGB", (64, 64), (30, 40, 110)))).hits) == 10
    assert ws.embedding_map("pca", 64).cached is False  # computed, shown, not saved
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (30, 40, 110)).save(photo)
    assert main(["search", str(photo), "--catalog", "synthetic", "--backbone", "test_efficientnet",
                 "--image-size", "32", "--pca-dim", "16", "--pca-min-fit-items", "0", "--n-trees", "4",
                 "--artifacts-dir", str(served.artifacts_dir), "--run", "imagenet"]) == 0
    assert "predicted" in capsys.readouterr().out
    with pytest.raises(ReadOnlyArtifacts, match="read-only"):  # another model's index would have to be built
        Workspace.open(served.replace(n_trees=8))


@pytest.mark.slow
def test_every_page_works_on_read_only_artifacts_and_the_model_page_says_so(tmp_path, read_only, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.search.workspace import Workspace

    Workspace.open(tiny_settings(tmp_path / "rw"))
    for name, value in {"CATALOG": "synthetic", "BACKBONE": "test_efficientnet", "IMAGE_SIZE": "32",
                        "PCA_DIM": "16", "PCA_MIN_FIT_ITEMS": "0", "N_TREES": "4", "SEARCH_K": "200", "RUN": "imagenet",
                        "ARTIFACTS_DIR": str(read_only(tmp_path / "rw" / "artifacts")),
                        "DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(f"FVS_{name}", value)
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    app.run()
    for page in ("search", "browse", "tags", "map", "model"):
        app.switch_page(f"app_pages/{page}.py").run()
        assert not app.exception and not app.error, (page, app.exception, [e.value for e in app.error])
    assert any("Served read-only" in info.value for info in app.info)
    assert app.button(key="train_run").disabled  # a run would write checkpoints there


# ------------------------------------------------------------------------------- 3. errors without internals
def test_an_uncaught_error_is_a_message_and_its_details_go_to_the_log(app, monkeypatch, caplog):
    from core.search.workspace import Workspace

    def broken(self):
        raise RuntimeError(f"internal failure in {ROOT}/core/search/workspace.py")

    monkeypatch.setattr(Workspace, "describe", broken)
    app.run()
    app.switch_page("app_pages/model.py").run()
    assert not app.exception
    shown = " ".join(e.value for e in app.error)
    assert "Something went wrong" in shown and "/" not in shown and "Traceback" not in shown
    assert "internal failure" in caplog.text and "Traceback" in caplog.text  # the operator's copy


def _shown_text(node) -> str:
    """Everything an AppTest tree would send to the browser, as text: every element's message, expanders' and
    tables' contents included (an Arrow table's bytes print their strings readably)."""
    own = str(node.proto) if getattr(node, "proto", None) is not None else ""
    return own + "".join(_shown_text(child) for child in getattr(node, "children", {}).values())


@pytest.mark.slow
def test_no_page_shows_a_visitor_the_server_folders(app, tmp_path_factory):
    """The Model page printed the artifacts folder's absolute path under 'Artifacts on disk' and the Home page under
    its chart; they now show it relative to the artifacts folder."""
    import ui

    artifacts = str(tmp_path_factory.getbasetemp() / "app-artifacts")
    app.run()
    seen = {}
    for page in ("home", "search", "browse", "tags", "map", "model"):
        if page != "home":
            app.switch_page(f"app_pages/{page}.py").run()
        assert not app.exception, (page, app.exception)
        seen[page] = _shown_text(app._tree)
        assert artifacts not in seen[page] and str(ROOT) not in seen[page], page
    assert "artifacts/synthetic-" in seen["model"]  # still there, where an operator looks for it
    settings = tiny_settings(Path(artifacts).parent)
    assert ui.shown_path(settings.artifacts_dir / "runs" / "r1", settings) == "artifacts/runs/r1"
    assert ui.shown_path(ROOT / "models" / "shop-run", settings.replace(shipped_runs_dir=ROOT / "models")) == \
        "models/shop-run"
    said = ui.without_server_paths(f"No checkpoint at {settings.artifacts_dir}/runs/x/checkpoint-best.pt nor at "
                                   "/srv/secret/layout/weights.pth; see https://example.org/a/b", settings)
    assert said == ("No checkpoint at artifacts/runs/x/checkpoint-best.pt nor at …/weights.pth; see "
                    "https://example.org/a/b")


def test_the_shipped_config_shows_visitors_no_error_details():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] in ("none", False)


# ------------------------------------------------------------------------------- 5-6. numbers as people read them
@pytest.mark.parametrize(("cell", "price"), [("€12,50", 12.5), ("1.234,56 EUR", 1234.56), ("1 234,50 zł", 1234.5),
                                             ("$1,234.56", 1234.56), ("12.50", 12.5), ("-0", 0.0), ("1e-9", 1e-9)])
def test_prices_are_read_in_the_format_they_are_written(cell, price):
    assert parse_price(cell) == (pytest.approx(price), "")
    assert str(parse_price(cell)[0]) != "-0.0"


@pytest.mark.parametrize("cell", ["1,234", "€1.234"])
def test_an_ambiguous_price_is_a_problem_not_a_guess(cell):
    value, reason = parse_price(cell)
    assert np.isnan(value) and "two ways" in reason


@pytest.mark.parametrize(("value", "shown"), [(1e308, "1.0e308"), (10**40, "1.0e40"), (-0.0, "0.00"),
                                              (1e-9, "1.0e-09"), (1234.5, "1,234.50"), (9_999_999.99, "9,999,999.99")])
def test_numbers_are_shown_in_at_most_twelve_characters(value, shown):
    assert compact_number(value) == shown and len(shown) <= 12


def test_absurd_prices_are_flagged_at_prepare_shown_compactly_and_leave_the_slider_usable(tmp_path):
    from core.catalog.registry import open_catalog
    from core.search.browse import ItemFilter, filter_rows, open_ended, price_range

    prices = ["1e308", "-0", "1e-9", "€12,50", "1.234,56 EUR", "1,234", "20", "30", "40"]
    source = odd_shop(tmp_path / "shop", price=prices)
    settings = tiny_settings(tmp_path)
    report = prepare_catalog(SourceSpec(path=str(source)), settings, name="absurd")
    flagged = report.problems[report.problems["problem"].str.contains("price")]
    assert set(flagged["where"]) == {"line 2", "line 7"} and not flagged.set_index("where").loc["line 2", "skipped"]
    catalog = open_catalog(settings.replace(catalog="absurd"))
    shown = [catalog.details(row).get("price", "") for row in range(len(catalog))]
    assert "1.0e308" in shown and "0.00" in shown and "12.50" in shown and "1,234.56" in shown
    assert max(len(text) for text in shown) <= 12 and "-0.00" not in shown
    low, high = price_range(catalog)
    assert 0 <= low < high <= 1e4  # the slider spans the ordinary prices, not 1.797e308
    top = filter_rows(catalog, ItemFilter(price=open_ended((20.0, high), (low, high))))
    assert catalog.items["price"].iloc[top].max() == 1e308  # the outlier is still found from the top end


def test_absurd_values_in_other_numeric_columns_are_flagged_and_shown_compactly(tmp_path):
    """A rating of 1e308, a weight written with 411 digits and a -999999 sentinel are listed with their line and
    kept; a 13-digit barcode column and a text column with numbers in it are not numbers out of range."""
    from core.catalog.registry import open_catalog

    huge = "1" + "0" * 410
    columns = {"rating": ["4", "5", "1e308", "3", "4.5", "4", "-999999", "5"],
               "weight_g": ["120", huge, "180", "-0", "0.30000000000000004", "150", "140", "160"],
               "ean": [str(4006381333931 + i) for i in range(7)] + ["12"],
               "size": ["S", "M", "L", "1e308", "XL", "M", "S", "L"]}
    source = odd_shop(tmp_path / "shop", **columns)
    settings = tiny_settings(tmp_path)
    report = prepare_catalog(SourceSpec(path=str(source)), settings, name="absurd-columns")
    flagged = report.problems[report.problems["problem"].str.contains("far outside")]
    assert sorted(zip(flagged["where"], flagged["problem"].str.extract(r"'(\w+)'")[0], strict=True)) == \
        [("line 3", "weight_g"), ("line 4", "rating"), ("line 8", "rating")], flagged
    assert not flagged["skipped"].any() and "1.0e410" in " ".join(flagged["problem"])
    catalog = open_catalog(settings.replace(catalog="absurd-columns"))
    shown = {column: [catalog.details(row).get(column, "") for row in range(len(catalog))] for column in columns}
    assert "1.0e410" in shown["weight_g"] and "0" in shown["weight_g"] and "0.30" in shown["weight_g"]
    assert "120" in shown["weight_g"] and "4.5" in shown["rating"]  # ordinary numbers as the seller wrote them
    cards = [catalog.headline(row)[1] for row in range(len(catalog))] + [" ".join(catalog.details(row).values())
                                                                        for row in range(len(catalog))]
    assert huge not in " ".join(cards) and "-0" not in shown["weight_g"]
    assert max(len(text) for texts in shown.values() for text in texts) <= 12


# ------------------------------------------------------------------------------- 6. recipes and weights files
@pytest.mark.parametrize(("change", "said"), [({"augment": "no"}, "augment must be true or false"),
                                              ({"epochs": 5.5}, "epochs must be a whole number"),
                                              ({"lr": "fast"}, "lr must be a number")])
def test_a_recipe_value_of_the_wrong_type_is_refused_by_name(change, said):
    from core.config import TrainConfig

    with pytest.raises(ValueError, match=said):
        TrainConfig(**change)
    assert TrainConfig(lr=1).lr == 1  # a whole number is a number


@pytest.mark.parametrize("wrap", ["model", "state_dict_ema", "module."])
def test_a_training_checkpoint_of_the_right_network_is_read_as_timm_reads_it(tmp_path, wrap):
    import torch

    from core.model.backbone import create_backbone

    source = create_backbone("efficientnet_lite0", pretrained=False, num_classes=1000)
    with torch.no_grad():
        next(iter(source.parameters())).add_(1.0)  # weights unlike a fresh model's
    state = source.state_dict()
    saved = {f"module.{k}": v for k, v in state.items()} if wrap == "module." else {wrap: state, "epoch": 3}
    torch.save(saved, tmp_path / "mine.pth")
    loaded = create_backbone("efficientnet_lite0", weights_path=tmp_path / "mine.pth")
    first = next(iter(state))
    assert torch.equal(loaded.state_dict()[first], state[first])


# ------------------------------------------------------------------------------- 9. the smaller ones
def test_a_pasted_photo_with_an_absurd_name_or_no_comma_gets_a_quick_true_message():
    import base64
    import time

    import ui

    payload = base64.b64encode(encoded(Image.new("RGB", (64, 64), (30, 40, 110)))).decode()
    started = time.perf_counter()
    photo, problem = ui.read_pasted(f"data:image/png;base64,{payload}", "x" * 18_000_000)
    assert photo is not None and problem is None and time.perf_counter() - started < 1.0
    photo, problem = ui.read_pasted(f"data:image/png;base64{payload}", "no-comma.png")
    assert photo is None and "empty" not in problem and "not a pasted image" in problem


def test_the_summary_names_the_runtime_that_serves(shared_workspace):
    from core.embedding.runtimes import runtime_of

    assert shared_workspace.describe()["inference"] == runtime_of(shared_workspace.embedder.network)
