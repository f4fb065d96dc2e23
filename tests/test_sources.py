"""A user's catalogue in each layout, each malformed case, and the prepared catalogue it becomes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import GARMENTS, garment_file_photo, tiny_settings, write_folder_catalogue, write_photo_records
from PIL import Image

from core.__main__ import main
from core.catalog.item_files import load_photo
from core.catalog.prepare import prepare_catalog
from core.catalog.registry import catalog_choices, open_catalog
from core.catalog.sources import CatalogError, SourceSpec, TableColumns, hashed_split, read_source
from core.photo.domain import PhotoDomain


def table(tmp_path, records, name="products.csv", **changes):
    frame = pd.DataFrame(records)
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return SourceSpec(path=str(path), **changes)


def problems_of(source) -> dict[str, str]:
    return {p.where: p.problem for p in source.problems}


# ------------------------------------------------------------------------------------------ the layouts
def test_a_folder_of_category_subfolders(tmp_path):
    root = write_folder_catalogue(tmp_path / "shop", per_category=3)
    Image.new("RGB", (10, 10)).save(root / "loose.png")  # not in a category folder
    (root / "Shirt" / "notes.txt").write_text("not an image")
    source = read_source(SourceSpec(path=str(root)))
    assert source.layout == "folder"
    assert sorted(source.items["category"].unique()) == sorted(GARMENTS)
    assert len(source.items) == 9 and "Shirt/00" in set(source.items["id"])
    assert problems_of(source) == {"loose.png": "not inside a category folder"}


def test_a_flat_folder_is_one_category_named_after_it(tmp_path):
    root = tmp_path / "summer-drop"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(root / f"{i}.png")
    source = read_source(SourceSpec(path=str(root)))
    assert set(source.items["category"]) == {"summer-drop"} and len(source.items) == 3


def test_a_symlink_out_of_the_folder_is_rejected(tmp_path):
    root = write_folder_catalogue(tmp_path / "shop", per_category=1)
    outside = tmp_path / "secret.jpg"
    Image.new("RGB", (10, 10)).save(outside)
    os.symlink(outside, root / "Shirt" / "link.jpg")
    source = read_source(SourceSpec(path=str(root)))
    assert "Shirt/link" not in set(source.items["id"])
    assert "outside the catalogue folder" in problems_of(source)["Shirt/link.jpg"]


def test_a_csv_with_descriptions_brands_and_prices(tmp_path):
    records = write_photo_records(tmp_path)
    records[0]["price"] = "€1,299.00"
    records[1]["price"] = "twelve"
    source = read_source(table(tmp_path, records))
    items = source.items.set_index("id")
    assert len(items) == 12 and items.loc["shirt-00", "price"] == 1299.0
    assert np.isnan(items.loc["shirt-01", "price"])  # kept, with the price left empty and the reason listed
    assert problems_of(source) == {"line 3": "the price is not a number; left empty"}
    assert not source.problems[0].skipped
    assert items.loc["skirt-02", "brand"] == "Zed" and items.loc["skirt-02", "colour"] == "green"  # extras kept
    assert items.loc["scarf-03", "description"].startswith("Soft red cotton scarf")
    assert set(items["split"]) <= {"train", "test"}
    assert list(items["split"]) == list(hashed_split(pd.Series(items.index)))  # stable: a hash of the id


def test_a_parquet_table_with_other_column_names_and_tag_lists(tmp_path):
    records = write_photo_records(tmp_path)
    renamed = [{"file": r["image"], "sku": i, "type": r["category"], "labels": [r["colour"], "cotton"]}
               for i, r in enumerate(records)]
    spec = table(tmp_path, renamed, "products.parquet",
                 columns=TableColumns(image="file", id="sku", category="type", tags="labels"))
    items = read_source(spec).items
    assert list(items["id"][:3]) == ["0", "1", "2"]  # integer ids become text
    assert items.loc[0, "tags"] == ["red", "cotton"] and items.loc[0, "category"] == "Shirt"


def write_deepfashion(root, boxes_valid=True):
    """The Category and Attribute Prediction layout: two header lines per list file, 1-based labels."""
    rng = np.random.default_rng(0)
    names = [("Blouse", 1), ("Shorts", 2), ("Dress", 3)]
    images, labels, boxes, splits = [], [], [], []
    for label, (name, _) in enumerate(names, start=1):
        folder = root / "img" / f"Pretty_{name}"
        folder.mkdir(parents=True)
        for i in range(4):
            photo = Image.new("RGB", (120, 100), (250, 250, 250))
            photo.paste(garment_file_photo(list(GARMENTS)[label - 1], "red", rng, size=60), (40, 20))
            photo.paste((0, 200, 0), (0, 0, 30, 100))  # a green stripe outside the box: must be cropped away
            relative = f"img/Pretty_{name}/img_{i:08d}.jpg"
            photo.save(root / relative, quality=95)
            images.append(relative)
            labels.append(label)
            boxes.append((40, 20, 100, 80) if boxes_valid or i else (50, 50, 10, 10))
            splits.append(["train", "val", "test", "train"][i])
    (root / "Anno").mkdir()
    (root / "Eval").mkdir()

    def write(path, header, rows):
        (root / path).write_text(f"{len(rows)}\n{header}\n" + "".join(" ".join(map(str, r)) + "\n" for r in rows))

    write("Anno/list_category_cloth.txt", "category_name  category_type", names)
    write("Anno/list_category_img.txt", "image_name  category_label", list(zip(images, labels, strict=True)))
    write("Anno/list_bbox.txt", "image_name  x_1  y_1  x_2  y_2", [(i, *b) for i, b in zip(images, boxes, strict=True)])
    write("Eval/list_eval_partition.txt", "image_name  evaluation_status", list(zip(images, splits, strict=True)))
    return root


def test_the_deepfashion_layout_with_boxes_types_and_partition(tmp_path):
    root = write_deepfashion(tmp_path / "df", boxes_valid=False)
    source = read_source(SourceSpec(path=str(root)))
    assert source.layout == "deepfashion" and len(source.items) == 12
    assert source.items.groupby("category").size().to_dict() == {"Blouse": 4, "Dress": 4, "Shorts": 4}
    assert list(source.items["split"][:4]) == ["train", "train", "test", "train"]  # val joins train
    repaired = [p for p in source.problems if not p.skipped]
    assert len(repaired) == 3 and "bounding box" in repaired[0].problem  # invalid boxes: whole image used

    upper = read_source(SourceSpec(path=str(root), categories=("upper", "Dress"), per_category=2))
    assert upper.items.groupby("category").size().to_dict() == {"Blouse": 2, "Dress": 2}
    assert repaired[0].where.startswith("Anno/list_bbox.txt line ")
    with pytest.raises(CatalogError, match=r"Unknown DeepFashion category 'Bogus': use garment types \(full, "
                                           r"lower, upper\) or category names \(Blouse, Shorts, Dress\)"):
        read_source(SourceSpec(path=str(root), categories=("Bogus",)))


def test_the_deepfashion_box_is_cropped_before_the_domain_conversion(tmp_path):
    root = write_deepfashion(tmp_path / "df")
    settings = tiny_settings(tmp_path)
    prepare_catalog(SourceSpec(path=str(root)), settings, name="df", photo_size=64)
    catalog = open_catalog(settings.replace(catalog="df"))
    item = catalog.domain_batch([1])[0]
    original = Image.open(catalog.items.loc[1, "path"]).convert("RGB")
    np.testing.assert_array_equal(item, PhotoDomain(64).convert(original.crop((40, 20, 100, 80))))
    assert (item[..., 1].astype(int) - item[..., 0]).max() < 60  # no green stripe from outside the box


# ------------------------------------------------------------------------------------------ malformed input
def test_a_missing_image_column_names_the_columns_there_are(tmp_path):
    records = [{"picture": r["image"], "category": r["category"]} for r in write_photo_records(tmp_path)]
    with pytest.raises(CatalogError, match=r"no 'image' column .*picture, category.*--image-column"):
        read_source(table(tmp_path, records))


def test_text_that_is_not_utf8_names_the_line(tmp_path):
    records = write_photo_records(tmp_path)
    lines = ["image,category,description"] + [f"{r['image']},{r['category']},plain" for r in records]
    data = "\n".join(lines).encode()
    data = data.replace(b"plain", "caf\u00e9".encode("latin-1"), 1)  # Latin-1 é on the first data line
    (tmp_path / "products.csv").write_bytes(data)
    with pytest.raises(CatalogError, match=r"products.csv, line 2: the text is not UTF-8 \(byte 0xe9\)"):
        read_source(SourceSpec(path=str(tmp_path / "products.csv")))


def test_duplicate_ids_and_duplicate_images_are_listed_and_skipped(tmp_path):
    records = write_photo_records(tmp_path)
    records[3]["id"] = records[1]["id"]
    records.append(dict(records[5], id="another"))
    source = read_source(table(tmp_path, records))
    assert problems_of(source) == {"line 5": "its id is already used on line 3",
                                   "line 14": "the same image as line 7"}
    assert len(source.items) == 11


@pytest.mark.parametrize("path, reason", [
    ("../../etc/passwd", "leaves the catalogue folder"),
    ("/etc/passwd", "is outside the table's folder and the allowed folders"),
    ("images/absent.jpg", "does not exist"),
    ("products.csv", "is not an image file name"),
    ("", "is empty"),
])
def test_bad_image_paths_are_rejected_with_their_line(tmp_path, path, reason):
    records = write_photo_records(tmp_path)
    records[2]["image"] = path
    source = read_source(table(tmp_path, records))
    assert reason in problems_of(source)["line 4"]
    assert len(source.items) == 11 and "/etc/passwd" not in set(source.items["path"])


def test_absolute_paths_under_an_allowed_root_are_accepted(tmp_path):
    photos = tmp_path / "nas"
    records = write_photo_records(photos)
    for r in records:
        r["image"] = str(photos / r["image"])
    (tmp_path / "tables").mkdir()
    assert len(read_source(table(tmp_path / "tables", records)).items) == 0
    assert len(read_source(table(tmp_path / "tables", records, allowed_roots=(str(photos),))).items) == 12


def test_malformed_deepfashion_lists_name_the_file_and_line(tmp_path):
    root = write_deepfashion(tmp_path / "df")
    lines = (root / "Anno/list_bbox.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # a row with a field missing
    (root / "Anno/list_bbox.txt").write_text("\n".join(lines))
    with pytest.raises(CatalogError, match=r"Anno/list_bbox.txt, line 5: expected 5 fields"):
        read_source(SourceSpec(path=str(root)))
    root = write_deepfashion(tmp_path / "df2")
    (root / "Eval/list_eval_partition.txt").unlink()
    with pytest.raises(CatalogError, match="no Eval/list_eval_partition.txt"):
        read_source(SourceSpec(path=str(root)))


def test_unreadable_images_are_listed_by_prepare_and_the_rest_is_kept(tmp_path):
    records = write_photo_records(tmp_path)
    (tmp_path / records[0]["image"]).write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / records[1]["image"]).write_bytes((tmp_path / records[2]["image"]).read_bytes()[:300])  # truncated
    report = prepare_catalog(table(tmp_path, records), tiny_settings(tmp_path), name="shop", photo_size=64)
    assert len(report.items) == 10
    listed = report.problems.set_index("where")["problem"]
    assert "not an image" in listed["line 2"] and "damaged or incomplete" in listed["line 3"]  # rows of the table
    assert (tmp_path / "artifacts/catalogs/shop/problems.csv").read_text().count("\n") == 3


def test_a_source_with_no_usable_image_is_an_error(tmp_path):
    records = write_photo_records(tmp_path)
    for r in records:
        r["image"] = "../outside.jpg"
    with pytest.raises(CatalogError, match=r"no usable image \(12 problems: line 2: image path"):
        prepare_catalog(table(tmp_path, records), tiny_settings(tmp_path), name="shop")


def test_bad_catalogue_names_are_refused(tmp_path):
    spec = SourceSpec(path=str(write_folder_catalogue(tmp_path / "shop", 1)))
    for name in ("fashion-mnist", "../up", "Has Space"):
        with pytest.raises(CatalogError, match="not usable"):
            prepare_catalog(spec, tiny_settings(tmp_path), name=name)


# ------------------------------------------------------------------------------------------ prepared catalogues
def test_prepare_registers_a_catalogue_the_app_and_cli_can_open(tmp_path, capsys):
    records = write_photo_records(tmp_path / "shop")
    pd.DataFrame(records).to_csv(tmp_path / "shop" / "products.csv", index=False)
    settings = tiny_settings(tmp_path)
    code = main(["prepare", str(tmp_path / "shop" / "products.csv"), "--name", "shop", "--data-only", "--json",
                 "--artifacts-dir", str(settings.artifacts_dir), "--photo-size", "64"])
    summary = json.loads(capsys.readouterr().out)["catalog"]
    assert code == 0 and summary["items"] == 12 and summary["categories"] == {"Scarf": 4, "Shirt": 4, "Skirt": 4}
    assert "cotton" in summary["tags"] and summary["skipped"] == 0
    assert "shop" in catalog_choices(settings)
    catalog = open_catalog(settings.replace(catalog="shop"))
    assert catalog.on_disk and catalog.domain_batch([0, 5]).shape == (2, 64, 64, 3)
    assert catalog.details(0) == {"colour": "red", "brand": "Zed", "price": "10.50",  # colour: the table's own
                                  "description": "Soft red cotton shirt with a relaxed fit"}
    assert catalog.thumbnail(0, 40).size == (40, 40)


def test_prepare_strict_fails_on_any_problem(tmp_path, capsys):
    root = write_folder_catalogue(tmp_path / "shop", per_category=1)
    (root / "Shirt" / "bad.jpg").write_bytes(b"nope")
    args = ["prepare", str(root), "--data-only", "--artifacts-dir", str(tmp_path / "a")]
    assert main(args) == 0
    assert "Shirt/bad.jpg: bad.jpg is not an image file" in capsys.readouterr().err
    assert main([*args, "--strict", "--name", "strict"]) == 2
    assert "1 entries had problems, and strict checking is on" in capsys.readouterr().err
    assert not (tmp_path / "a" / "catalogs" / "strict").exists()


def test_an_exif_rotated_photo_enters_upright(tmp_path):
    upright = garment_file_photo("Scarf", "navy", np.random.default_rng(1), size=80).resize((60, 90))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a phone stores a portrait shot…
    exif = Image.Exif()
    exif[0x0112] = 6  # …with "rotate 90° clockwise to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded = load_photo(str(tmp_path / "phone.jpg"))
    assert loaded.size == (60, 90)
    assert np.abs(np.asarray(loaded, float) - np.asarray(upright, float)).mean() < 6


# ------------------------------------------------------------------------------------------ groups
def test_a_group_never_spans_two_splits(tmp_path):
    records = write_photo_records(tmp_path, per_category=12)  # 36 items in 9 products of 4 colours
    for i, record in enumerate(records):
        record["parent_sku"] = f"P{i // 4}"
    records[1]["split"] = "test"  # the table says test for one variant of P0, train for another
    records[2]["split"] = "train"
    source = read_source(table(tmp_path, records, columns=TableColumns(group="parent_sku")))
    items = source.items
    assert (items.groupby("group")["split"].nunique() == 1).all()
    assert items.loc[items["group"] == "P0", "split"].unique().tolist() == ["test"]
    assert problems_of(source) == {"line 4": "its group was given another split on an earlier line; it follows "
                                             "that one"}
    assert set(items["split"]) == {"train", "test"}  # the hash still sends some groups to test


def test_validation_takes_whole_groups(tmp_path):
    from core.catalog.splits import Splits
    from core.config import TrainConfig

    records = write_photo_records(tmp_path, per_category=12)
    for i, record in enumerate(records):
        record["parent_sku"] = f"P{i // 3}"
        record["split"] = "train"
    spec = table(tmp_path, records, columns=TableColumns(group="parent_sku"))
    prepare_catalog(spec, tiny_settings(tmp_path), name="shop", photo_size=64)
    catalog = open_catalog(tiny_settings(tmp_path).replace(catalog="shop"))
    splits = Splits.of(catalog, TrainConfig(val_fraction=0.25))
    groups = catalog.items["group"].to_numpy()
    assert not set(groups[splits.train]) & set(groups[splits.val]) and len(splits.val) >= 9
