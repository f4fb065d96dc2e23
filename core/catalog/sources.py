"""Reading a user's catalogue: a folder of category subfolders, a CSV or Parquet table, or the DeepFashion layout.

A reader turns a source into one items table (``id``, ``path``, ``category``, ``split`` and, where the source has
them, ``description``, ``brand``, ``price``, ``tags``, a bounding box and any other columns) plus a list of
``Problem`` rows. The rule is the same everywhere: a problem with *one entry* (a missing or unreadable image, a
duplicate, a path that leaves the catalogue folder, a price that is not a number) is listed with its row and the
entry is skipped or repaired, never silently and never fatally for the rest; a problem with the *source as a whole*
(no image column, text that is not UTF-8, an unparsable table) raises ``CatalogError`` naming the file, line and
column, because no item could be trusted.
"""

from __future__ import annotations

import csv
import hashlib
import posixpath
import re
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
TEST_SHARE = 0.15  # of a source without its own split: chosen by a hash of the id, so stable as items are added
UNCATEGORISED = "uncategorised"
DEEPFASHION_TYPES = {"1": "upper", "2": "lower", "3": "full"}
BOX = ["box_x1", "box_y1", "box_x2", "box_y2"]


class CatalogError(ValueError):
    """The source cannot be read at all; ``str(err)`` names the file, line or column and says how to fix it."""


@dataclass(frozen=True)
class Problem:
    where: str  # "line 7", "row 7" or a file path: how a person finds the entry in the source
    entry: str  # the image path or id concerned
    problem: str
    skipped: bool = True  # False: the entry was kept with the field left empty


@dataclass(frozen=True)
class TableColumns:
    """Which column holds what, for tables whose header says ``file`` or ``product_name`` instead."""

    image: str = "image"
    id: str = "id"
    category: str = "category"
    description: str = "description"
    tags: str = "tags"
    brand: str = "brand"
    price: str = "price"
    split: str = "split"
    # Items that must share a split: colour variants of one product (``parent_sku``), photos by one sender
    # (``sender_id``). Without it, near-duplicates land on both sides and test figures flatter the model.
    group: str = "group"


@dataclass(frozen=True)
class SourceSpec:
    """Everything that says how a source is read: saved with the prepared catalogue, part of its key."""

    path: str
    layout: str = "auto"
    columns: TableColumns = field(default_factory=TableColumns)
    # Absolute image paths in a table must lie under one of these (the table's own folder is always allowed).
    allowed_roots: tuple[str, ...] = ()
    # DeepFashion: keep these category names or garment types (upper, lower, full); empty keeps all.
    categories: tuple[str, ...] = ()
    per_category: int = 0  # DeepFashion: a balanced random sample of N items per category (0: all)
    seed: int = 0
    # Table columns whose values are tags too ("Blue", "Fleece", "Striped"; "a|b" cells give two), beside the
    # tags column or the tags mined from descriptions. Each tag remembers the column it came from.
    tag_columns: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SourceSpec":
        data = dict(data)
        data["columns"] = TableColumns(**data.get("columns", {}))
        data["allowed_roots"] = tuple(data.get("allowed_roots", ()))
        data["categories"] = tuple(data.get("categories", ()))
        data["tag_columns"] = tuple(data.get("tag_columns", ()))
        return cls(**data)

    def resolved_layout(self) -> str:
        path = Path(self.path)
        if self.layout != "auto":
            return self.layout
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            return "table"
        if (path / "Anno" / "list_category_img.txt").is_file():
            return "deepfashion"
        if path.is_dir():
            return "folder"
        raise CatalogError(f"{path} is neither a folder of images nor a .csv/.parquet table.")


@dataclass
class SourceTable:
    items: pd.DataFrame
    problems: list[Problem]
    layout: str



def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for p in problems], columns=["where", "entry", "problem", "skipped"])


def read_source(spec: SourceSpec, max_items: int = 0) -> SourceTable:
    """``max_items`` > 0: a source with more entries is refused as soon as that is known (before its images are
    listed in full or checked), so a folder like ``/`` cannot keep a server busy."""
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise CatalogError(f"{path} does not exist. Give a folder of images, a .csv/.parquet table or a "
                           "DeepFashion folder (with Anno/ and Eval/).")
    layout = spec.resolved_layout()
    if layout not in READERS:
        raise CatalogError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    table = READERS[layout](spec, max_items)
    _check_count(len(table.items), max_items, path)
    return table


def _check_count(count: int, max_items: int, path: Path) -> None:
    if max_items > 0 and count > max_items:
        raise CatalogError(f"{path.name} holds more than {max_items:,} entries, the most a catalogue added here may "
                           "have. Prepare it from a terminal (python -m core prepare SOURCE), which has no limit, "
                           "or split it.")


# -------------------------------------------------------------------------------------------------- folder
def read_folder(spec: SourceSpec, max_items: int = 0) -> SourceTable:
    """``root/<category>/**/<image>``; a folder with no subfolders is one category named after it. Links are
    followed only inside the folder: one that points out of it is a problem that does not say where it points,
    and reads the same whether its target exists or not."""
    root = Path(spec.path).expanduser().resolve()
    problems: list[Problem] = []
    subfolders, loose = [], []
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue
        if _is_image_name(entry):
            loose.append(entry)
        elif entry.is_dir():
            subfolders.append(entry)
        _check_count(len(loose) + len(subfolders), max_items, root)
    records = []
    if not subfolders:
        records = [(p, root.name) for p in sorted(loose)]
    else:
        problems += [Problem(p.name, p.name, "not inside a category folder") for p in sorted(loose)]
        for folder in sorted(subfolders, key=lambda f: (f.is_symlink(), f.name)):  # real folders claim files first
            inside = resolved_path(folder)
            if inside is None or not inside.is_relative_to(root):
                problems.append(Problem(folder.name, folder.name, _OUTSIDE))
                continue
            found = []
            for p in folder.rglob("*"):
                if _is_image_name(p):
                    found.append((p, folder.name))
                    _check_count(len(records) + len(found), max_items, root)
            records += sorted(found)
    rows, ids = [], []
    seen: dict[Path, str] = {}
    for file, category in records:
        relative = file.relative_to(root).as_posix()
        resolved = resolved_path(file)
        if resolved is None or not resolved.is_relative_to(root):
            problems.append(Problem(relative, relative, _OUTSIDE))
            continue
        if not resolved.is_file():
            problems.append(Problem(relative, relative, "is not a regular file (or a link to nothing)"))
            continue
        if resolved in seen:  # one photo reached twice through a link inside the folder
            problems.append(Problem(relative, relative, f"the same image as {seen[resolved]}"))
            continue
        seen[resolved] = relative
        rows.append({"path": str(resolved), "category": category, "where": relative})
        ids.append(relative.rsplit(".", 1)[0])
    items = pd.DataFrame(rows, columns=["path", "category", "where"])
    items.insert(0, "id", ids)
    items["split"] = hashed_split(items["id"])
    return SourceTable(items, problems, "folder")


_OUTSIDE = "links outside the catalogue folder; skipped"


def _is_image_name(path: Path) -> bool:
    """By name only (no stat): links and special files are judged where they are resolved."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def resolved_path(path: Path) -> Path | None:
    """``path`` with every link followed, or None when that cannot be done: a link loop, a name the system
    refuses (too long, a NUL byte)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


# -------------------------------------------------------------------------------------------------- table
def read_table(spec: SourceSpec, max_items: int = 0) -> SourceTable:
    """Messages about an entry quote its image path (the column a person fixes) and name its line, never the
    other cells: a table may hold text that is nobody else's business."""
    path = Path(spec.path).expanduser().resolve()
    cols = spec.columns
    raw, lines = _read_table_file(path, max_items)
    where = (lambda i: f"line {lines[i]}") if lines is not None else (lambda i: f"row {i + 1}")
    if cols.image not in raw.columns:
        raise CatalogError(f"{path.name} has no {cols.image!r} column for the image paths (its columns: "
                           f"{', '.join(map(str, raw.columns))}). Say which column holds them: --image-column, "
                           "or 'Image column' on the Home page.")
    roots = [path.parent] + [Path(r).expanduser().resolve() for r in spec.allowed_roots]
    problems: list[Problem] = []
    rows = []
    seen_paths: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    known = {cols.image, cols.id, cols.category, cols.description, cols.tags, cols.brand, cols.price, cols.split,
             cols.group}
    extras = [c for c in raw.columns if c not in known]
    implausible = implausible_numbers(raw[extras])
    for i, record in enumerate(raw.to_dict("records")):
        at = where(i)
        image = record[cols.image]
        if not isinstance(image, str) or not image.strip():
            problems.append(Problem(at, "", f"{cols.image!r} is empty or not text"))
            continue
        resolved, reason = resolve_image_path(image.strip(), path.parent, roots)
        if reason:
            problems.append(Problem(at, image, reason))
            continue
        if str(resolved) in seen_paths:
            problems.append(Problem(at, image, f"the same image as {seen_paths[str(resolved)]}"))
            continue
        item_id = _text(record.get(cols.id)) or Path(image).with_suffix("").as_posix()
        if item_id in seen_ids:
            problems.append(Problem(at, image, f"its id is already used on {seen_ids[item_id]}"))
            continue
        seen_paths[str(resolved)], seen_ids[item_id] = at, at
        row = {"id": item_id, "path": str(resolved), "where": at,
               "category": _text(record.get(cols.category)) or UNCATEGORISED}
        if cols.description in raw.columns:
            row["description"] = _text(record.get(cols.description))
        if cols.brand in raw.columns:
            row["brand"] = _text(record.get(cols.brand))
        if cols.price in raw.columns:
            row["price"], reason = parse_price(record.get(cols.price))
            if reason:
                problems.append(Problem(at, image, reason, skipped=False))
        problems += [Problem(at, image, reason, skipped=False) for reason in implausible.get(i, ())]
        if cols.tags in raw.columns:
            row["tags"] = parse_tags(record.get(cols.tags))
        if cols.split in raw.columns:
            split = _text(record.get(cols.split)).lower()
            if split not in ("", "train", "test", "val"):
                problems.append(Problem(at, image, f"{cols.split!r} is not train, val or test; chosen for it",
                                        skipped=False))
                split = ""
            row["split"] = split
        if cols.group in raw.columns:
            row["group"] = _text(record.get(cols.group)) or item_id  # an item without a group is its own
        row.update({f"extra:{c}": _text(record.get(c)) for c in extras})
        rows.append(row)
    items = pd.DataFrame(rows)
    if items.empty:
        items = pd.DataFrame(columns=["id", "path", "where", "category", "split"])
    split = items["split"] if "split" in items.columns else pd.Series([""] * len(items), dtype=object)
    items["split"] = np.where(split.isin(["train", "test"]), split, np.where(split == "val", "train", None))
    if "group" in items.columns:
        problems += _one_split_per_group(items)
    missing = items["split"].isna().to_numpy()
    if missing.any() and "group" in items.columns:
        items.loc[missing, "split"] = grouped_split(items.loc[missing, "group"])
    elif missing.any():
        items.loc[missing, "split"] = hashed_split(items.loc[missing, "id"])
    reserved = set(items.columns) | {"label", *BOX}
    items = items.rename(columns={c: _extra_name(c.removeprefix("extra:"), reserved)
                                  for c in items.columns if c.startswith("extra:")})
    return SourceTable(items, problems, "table")


def _one_split_per_group(items: pd.DataFrame) -> list[Problem]:
    """A group whose items were given different splits follows its first item's (the table's own split wins over
    the hash, but never splits a group): every item moved is listed."""
    problems = []
    given = items["split"].notna()
    first = items[given].drop_duplicates("group").set_index("group")["split"]
    wanted = items["group"].map(first)
    moved = given & (wanted != items["split"])
    for at, path in zip(items.loc[moved, "where"], items.loc[moved, "path"], strict=True):
        problems.append(Problem(at, path, "its group was given another split on an earlier line; it follows "
                                "that one", skipped=False))
    items["split"] = wanted.where(wanted.notna(), items["split"])
    return problems


def _extra_name(name: str, reserved: set[str]) -> str:
    """Extra columns are kept under their own name unless it is one the catalogue itself uses."""
    return f"{name} (source)" if name in reserved else name


MAX_COLUMNS = 1000  # a catalogue table with more is a mistake (and checking its header would take long)
MAX_TABLE_BYTES = 1 << 30  # 1 GiB of CSV is several million rows; past it a table is refused before it is read


def _read_table_file(path: Path, max_items: int = 0) -> tuple[pd.DataFrame, list[int] | None]:
    """The whole table as text cells (CSV) or typed cells (Parquet), and for a CSV the line each row starts on;
    file-level problems become CatalogError. With ``max_items``, a longer table is refused before it is read
    whole: a 400 KB Parquet file can hold 30 million rows."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CatalogError(f"{path.name} is not a regular file.")
    if info.st_size > MAX_TABLE_BYTES:
        raise CatalogError(f"{path.name} is {info.st_size / 2**30:.1f} GB; tables up to "
                           f"{MAX_TABLE_BYTES / 2**30:.0f} GB are read. Split it, or use Parquet.")
    if path.suffix.lower() == ".csv":
        return _read_csv(path, max_items)
    try:
        import pyarrow.parquet as pq

        _check_count(pq.ParquetFile(path).metadata.num_rows, max_items, path)  # from the footer: nothing decoded
        return pd.read_parquet(path), None
    except CatalogError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise CatalogError(f"{path.name} is not a readable Parquet file: {exc}") from exc


def _read_csv(path: Path, max_items: int = 0) -> tuple[pd.DataFrame, list[int]]:
    """Parsed with the csv module, not pandas, to know the line each row starts on: a quoted description over
    three lines must not make every later problem point two lines too early. Lines end at "\\n" only (as an editor
    and grep count them; a lone "\\r" inside a field is data). Read as a stream, so a table longer than
    ``max_items`` is refused after that many rows. Blank lines are skipped, short rows padded, and a row with more
    fields than the header is an error naming its line."""
    header: list[str] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    previous = 0
    with path.open(encoding="utf-8-sig", newline="\n") as text:
        reader = csv.reader(text, strict=True)
        try:
            for record in reader:
                start, previous = previous + 1, reader.line_num
                if not any(cell.strip() for cell in record):
                    continue
                if not header:
                    header = [cell.strip() for cell in record]
                    if len(header) > MAX_COLUMNS:
                        raise CatalogError(f"{path.name}, line {start}: {len(header):,} columns; tables of up to "
                                           f"{MAX_COLUMNS:,} columns are read.")
                    repeated = sorted(name for name, n in Counter(header).items() if n > 1)
                    if repeated:
                        raise CatalogError(f"{path.name}, line {start}: the header names column "
                                           f"{', '.join(map(repr, repeated))} more than once.")
                    continue
                if len(record) > len(header):
                    raise CatalogError(f"{path.name}, line {start}: {len(record)} fields, but the header has "
                                       f"{len(header)}. Look for an unquoted comma, or a quote that is not closed.")
                rows.append(record + [""] * (len(header) - len(record)))
                lines.append(start)
                _check_count(len(rows), max_items, path)
        except csv.Error as exc:
            raise CatalogError(f"{path.name}, line {previous + 1}: not a readable CSV table ({exc}). Look for a "
                               "quote on that line that is not closed.") from exc
        except UnicodeDecodeError as exc:
            line, byte = _first_non_utf8_line(path)  # the decoder reads ahead: find the line itself
            raise CatalogError(f"{path.name}, line {line}: the text is not UTF-8 (byte 0x{byte:02x}). Save the "
                               "table as UTF-8 (in a spreadsheet: CSV UTF-8) and prepare it again.") from exc
    if not header:
        raise CatalogError(f"{path.name} is empty: it needs a header line and one line per item.")
    return pd.DataFrame(rows, columns=header, dtype=str), lines


def _first_non_utf8_line(path: Path) -> tuple[int, int]:
    """(line, offending byte) of the first line that is not UTF-8, reading one line at a time."""
    with path.open("rb") as data:
        for number, line in enumerate(data, start=1):
            try:
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                return number, line[exc.start]
    return 0, 0


def resolve_image_path(raw: str, base: Path, roots: list[Path]) -> tuple[Path, str]:
    """(absolute path, "") or (…, reason). Relative paths resolve against ``base``; every path, after following
    symlinks, must stay under one of ``roots``: a table naming ``../../etc/passwd`` must not be read. Whether a path
    outside exists is never said, and ``~user`` is not expanded (it would tell which accounts exist)."""
    given = Path(raw)
    resolved = resolved_path(given if given.is_absolute() else base / given)
    if resolved is None:
        return base, f"image path {raw!r} is not a usable path (a link loop, a name too long or a NUL byte)"
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        if given.is_absolute():
            return resolved, (f"image path {raw!r} is outside the table's folder and the allowed folders; rejected "
                              "(allow its folder with --allow-root; on the dashboard, keep images inside the "
                              "catalogue folders)")
        return resolved, f"image path {raw!r} leaves the catalogue folder; rejected"
    try:
        if not resolved.exists():
            return resolved, f"image file {raw!r} does not exist"
        if not resolved.is_file():
            return resolved, f"{raw!r} is not a regular file"
    except OSError as exc:
        return resolved, f"image file {raw!r} cannot be looked at ({exc.strerror or exc})"
    if resolved.suffix.lower() not in IMAGE_SUFFIXES:
        return resolved, f"{raw!r} is not an image file name ({', '.join(IMAGE_SUFFIXES)})"
    return resolved, ""


def _text(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


PLAUSIBLE_PRICE = 1e9  # above this a price is listed as a problem (kept): a typo or a sentinel, not a garment
# One separator followed by exactly three digits, and no other: "1,234" or "€1.234" is 1234 in one convention and
# 1.234 in the other. Listed as a problem, never guessed.
_AMBIGUOUS = re.compile(r"^\D*\d{1,3}[.,]\d{3}\D*$")


_PRICE_REST = re.compile(r"[\s.,:;'’()\-]*(?:[A-Z]{3}[\s.,:;'’()\-]*)?")


def parse_price(value: object) -> tuple[float, str]:
    """A price as a float, or NaN and the reason. A plain number is read as one (``12.5``, ``1e3``); anything else
    by price-parser, which knows currency signs and codes, thousands separators and decimal commas
    (``€12,50`` is 12.5, ``1.234,56 EUR`` 1234.56, ``1 234,50 zł`` 1234.5). An ambiguous one (``1,234``) is
    left empty with a reason; an implausibly large one is kept with a reason."""
    text = _text(value)
    if not text:
        return float("nan"), ""
    try:
        price = float(text)
    except ValueError:
        if _AMBIGUOUS.match(text):
            return float("nan"), f"the price {text!r} could be read two ways (a thousands or a decimal separator); " \
                                 "left empty: write it as 1234 or 1.234"
        from price_parser import Price

        parsed = Price.fromstring(text)
        amount = parsed.amount_float
        # price-parser finds a number inside any text ("s3cr3t-price" gives 3): what is left besides the amount and
        # its currency must be punctuation, or a currency code, for the cell to be a price
        rest = text.replace(parsed.amount_text or "", " ", 1).replace(parsed.currency or "", " ", 1)
        if amount is None or not _PRICE_REST.fullmatch(rest):
            return float("nan"), "the price is not a number; left empty"
        price = -amount if re.match(r"^\s*-", text) else amount
    if not np.isfinite(price):
        return float("nan"), "the price is not a finite number; left empty"
    if price < 0:
        return float("nan"), "the price is negative; left empty"
    price = abs(price)  # -0 is 0
    if price > PLAUSIBLE_PRICE:
        return price, f"the price {compact_number(price)} is over {compact_number(PLAUSIBLE_PRICE)}; kept, check it"
    return price, ""


def compact_number(value: float, digits: int = 2) -> str:
    """A number as people read it, in at most 12 characters: ``1,234.50``; ``1.0e308`` from ten million on (never
    hundreds of digits, nor wrong ones: 10**40 formatted with ``,.2f`` prints digits float does not hold); ``-0``
    as ``0``; a tiny positive amount as ``1.0e-09`` rather than ``0.00``."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return f"{0:.{digits}f}"
    if abs(value) >= 1e7 or abs(value) < 10 ** -digits:  # 9,999,999.99 is 12 characters
        return f"{value:.1e}".replace("e+", "e")
    return f"{value:,.{digits}f}"


IMPLAUSIBLE_FACTOR = 1000  # beyond the far-out fences and this many times the column's largest ordinary magnitude


def _number(text: str) -> Decimal | None:
    """A cell written as a plain number (``12``, ``-0``, ``1e308``, a 411-digit integer) as an exact Decimal; None
    for anything else (``12 cm``, ``N/A``, a blank). Decimal, not float: 10**410 written out is not infinity."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return None if value.is_nan() else value


def implausible_numbers(table: pd.DataFrame) -> dict[int, list[str]]:
    """Reasons by row position for the cells of numeric columns that lie far outside their column: not finite, or
    beyond Tukey's far-out fences (quartiles ∓ 3 IQR) and over ``IMPLAUSIBLE_FACTOR`` times the largest magnitude
    within them (at least 1). A column is numeric when every non-blank cell is a plain number. Relative to the
    column because no absolute bound fits every column: a 13-digit barcode is ordinary, a rating of 1e308 is not;
    a typo's extra zeros or a sentinel (-999999, 1e308) are what this catches. Listed, kept: the seller checks."""
    reasons: dict[int, list[str]] = {}
    for column in table.columns:
        cells = [_text(v) for v in table[column]]
        numbers = {i: _number(c) for i, c in enumerate(cells) if c}
        if not numbers or any(n is None for n in numbers.values()):
            continue
        finite = pd.Series({i: float(n) for i, n in numbers.items() if n.is_finite() and abs(n) < Decimal("1e300")},
                           dtype=float)
        if len(finite):
            q1, q3 = finite.quantile([0.25, 0.75]).to_numpy()
            low, high = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
            ordinary = finite[(finite >= low) & (finite <= high)].abs().max()
            bound = Decimal(IMPLAUSIBLE_FACTOR * max(float(ordinary), 1.0))
        else:
            low, high, bound = 0.0, 0.0, Decimal(0)
        for i, value in numbers.items():
            far = not value.is_finite() or (not low <= float(value) <= high and abs(value) > bound)
            if far:
                reasons.setdefault(i, []).append(
                    f"{column!r} is {shown_text(cells[i])}, far outside the column's other values; kept, check it")
    return reasons


def shown_text(text: str) -> str:
    """A text cell as shown on a card: a number written in more than 12 characters compactly (``1.0e410`` for a
    411-digit integer, ``0.30`` for ``0.30000000000000004``), ``-0`` as ``0``; anything else as written, since a
    short number's own spelling (``42``, ``007``) is what its seller chose."""
    value = _number(text)
    if value is None or (len(text) <= 12 and not (value.is_zero() and value.is_signed())):
        return text
    if value.is_zero():
        return "0"
    if not value.is_finite():
        return "-inf" if value < 0 else "inf"
    if abs(value) >= Decimal("1e7") or abs(value) < Decimal("0.01"):
        return f"{value:.1e}".replace("e+", "e")
    return compact_number(float(value))


def parse_tags(value: object) -> list[str]:
    """A tags cell: a list (Parquet) or text separated by ``|``, ``;`` or ``,``. Used as given (only blanks and
    repeats dropped): the catalogue's own vocabulary is the one its users know."""
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [_text(v) for v in value]  # a missing element (None, NaN) is no tag, not the tag "None"
    else:
        parts = re.split(r"[|;,]", _text(value))
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _bucket(name: object) -> float:
    return int.from_bytes(hashlib.blake2b(str(name).encode(), digest_size=4).digest(), "big") / 2**32


def hashed_split(ids: pd.Series) -> np.ndarray:
    """"test" for about TEST_SHARE of the ids, chosen by hash: the same item keeps its split across prepares."""
    return np.array(["test" if _bucket(i) < TEST_SHARE else "train" for i in ids], dtype=object)


def grouped_split(groups: pd.Series) -> np.ndarray:
    """Whole groups to "test", in the order of their hash, until it holds TEST_SHARE of the items; a group that
    would overshoot is passed over. A hash per group alone gives lumpy shares when groups are uneven (one sender of
    the garment photos has 617 of 5,096): 25 % test instead of 15 %."""
    sizes = groups.value_counts()
    target, taken, test = TEST_SHARE * len(groups), 0, set()
    for group in sorted(sizes.index, key=lambda g: (_bucket(g), str(g))):
        if taken + sizes[group] <= target:
            test.add(group)
            taken += sizes[group]
    return np.where(groups.isin(test), "test", "train").astype(object)


# -------------------------------------------------------------------------------------------------- DeepFashion
DEEPFASHION_FILES = {
    "categories": "Anno/list_category_cloth.txt",
    "labels": "Anno/list_category_img.txt",
    "boxes": "Anno/list_bbox.txt",
    "partition": "Eval/list_eval_partition.txt",
}


DEEPFASHION_FIELDS = {"Anno/list_category_cloth.txt": 2, "Anno/list_category_img.txt": 2, "Anno/list_bbox.txt": 5,
                      "Eval/list_eval_partition.txt": 2}


def read_deepfashion(spec: SourceSpec, max_items: int = 0) -> SourceTable:
    """The Category and Attribute Prediction benchmark: category names and types, one label, box and split per
    image. Its "val" partition joins train (a run carves its own validation from train)."""
    root = Path(spec.path).expanduser().resolve()
    lists = {name: _read_list(root, relative, max_items) for name, relative in DEEPFASHION_FILES.items()}
    categories = lists["categories"]
    if categories.shape[1] < 3:
        raise CatalogError(f"{DEEPFASHION_FILES['categories']}: expected 'category_name category_type' columns.")
    names = categories.iloc[:, 0].tolist()
    types = [DEEPFASHION_TYPES.get(t, t) for t in categories.iloc[:, 1]]
    problems: list[Problem] = []
    labels = _first_of_each(lists["labels"].set_axis(["image", "label", "line"], axis=1), "labels", problems)
    boxes = _first_of_each(lists["boxes"].set_axis(["image", *BOX, "line"], axis=1), "boxes", problems)
    boxes = boxes.set_index("image")
    partition = _first_of_each(lists["partition"].set_axis(["image", "split", "line"], axis=1), "partition",
                               problems).set_index("image")["split"]
    rows = []
    wanted = set(spec.categories)
    unknown = wanted - set(names) - set(types)
    if unknown:
        kinds = ", ".join(sorted(set(types)))
        raise CatalogError(f"Unknown DeepFashion {'category' if len(unknown) == 1 else 'categories'} "
                           f"{', '.join(sorted(map(repr, unknown)))}: use garment types ({kinds}) "
                           f"or category names ({', '.join(names)}).")
    for image, label, line in zip(labels["image"], labels["label"], labels["line"], strict=True):
        at = f"{DEEPFASHION_FILES['labels']} line {line}"
        if not label.isdigit() or not 1 <= int(label) <= len(names):
            problems.append(Problem(at, image, f"category label {label!r} is not 1..{len(names)}"))
            continue
        category, kind = names[int(label) - 1], types[int(label) - 1]
        if wanted and category not in wanted and kind not in wanted:
            continue
        resolved, reason = resolve_image_path(image, root, [root])
        if reason:
            problems.append(Problem(at, image, reason))
            continue
        box = _valid_box(boxes.loc[image, BOX].tolist()) if image in boxes.index else None
        if box is None:
            where = (f"{DEEPFASHION_FILES['boxes']} line {boxes.loc[image, 'line']}" if image in boxes.index
                     else f"{DEEPFASHION_FILES['boxes']} (not listed)")
            problems.append(Problem(where, image, "no valid bounding box; the whole image is used", skipped=False))
        split = partition.get(image, "")
        rows.append({"id": image.removeprefix("img/").rsplit(".", 1)[0], "path": str(resolved), "where": at,
                     "category": category, "garment_type": kind,
                     "split": "test" if split == "test" else "train",
                     **dict(zip(BOX, box if box is not None else [-1] * 4, strict=True))})
    items = pd.DataFrame(rows, columns=["id", "path", "where", "category", "garment_type", "split", *BOX])
    if spec.per_category > 0 and len(items):
        rng = np.random.default_rng(spec.seed)
        keep = [np.sort(rng.choice(group, size=min(spec.per_category, len(group)), replace=False))
                for group in items.groupby("category", sort=True).indices.values()]
        items = items.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)
    return SourceTable(items, problems, "deepfashion")


def _first_of_each(rows: pd.DataFrame, name: str, problems: list[Problem]) -> pd.DataFrame:
    """An image listed twice in one list file is a problem with the later line, which is ignored: the first
    line wins, as a person reading the file top-down would expect."""
    # one image, however it is spelled ("./img/a.jpg", "img//a.jpg", "img/x/../a.jpg")
    rows = rows.assign(image=[posixpath.normpath(image) for image in rows["image"]])
    repeated = rows["image"].duplicated(keep="first")
    if repeated.any():
        first = rows.drop_duplicates("image").set_index("image")["line"]
        for image, line in zip(rows.loc[repeated, "image"], rows.loc[repeated, "line"], strict=True):
            problems.append(Problem(f"{DEEPFASHION_FILES[name]} line {line}", image,
                                    f"listed again (first on line {first[image]}); this line is ignored",
                                    skipped=False))
    return rows.loc[~repeated].reset_index(drop=True)


def _read_list(root: Path, relative: str, max_items: int = 0) -> pd.DataFrame:
    """A DeepFashion list file: a count line, a header line, then whitespace-separated rows; a last ``line``
    column holds each row's line number in the file (blank lines are skipped, not miscounted)."""
    path = root / relative
    if not path.is_file():
        raise CatalogError(f"The DeepFashion folder {root} has no {relative}. The Category and Attribute "
                           "Prediction benchmark needs Anno/list_category_cloth.txt, Anno/list_category_img.txt, "
                           "Anno/list_bbox.txt and Eval/list_eval_partition.txt.")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise CatalogError(f"{relative} is larger than {MAX_TABLE_BYTES / 2**30:.0f} GB; it is not a DeepFashion list.")
    try:
        # split at "\n" only, as an editor counts lines: str.splitlines would also split at \f, \x1c or \u2028;
        # read line by line, so a list longer than max_items is refused once that many lines are in
        lines = []
        with path.open(encoding="utf-8", newline="\n") as text:
            for line in text:
                lines.append(line.rstrip("\n").rstrip("\r"))
                _check_count(len(lines) - 2, max_items, path)
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{relative} is not UTF-8 text.") from exc
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise CatalogError(f"{relative}, line 1: expected the number of entries, found {lines[:1]!r}.")
    header = lines[1].split()
    if len(header) != DEEPFASHION_FIELDS[relative]:
        raise CatalogError(f"{relative}, line 2: expected a header of {DEEPFASHION_FIELDS[relative]} column names, "
                           f"found {len(header)}.")
    # Category names contain spaces in the released file ("Button-Down", but also multi-word ones): the
    # last field is the type, everything before it the name.
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        row = line.rsplit(None, len(header) - 1)
        if len(row) != len(header):
            raise CatalogError(f"{relative}, line {number}: expected {len(header)} fields ({' '.join(header)}), "
                               f"found {len(row)}.")
        rows.append([*row, number])
    return pd.DataFrame(rows, columns=[*header, "line"]).astype({name: str for name in header})


def _valid_box(values: list) -> list[int] | None:
    try:
        x1, y1, x2, y2 = (int(v) for v in values)
    except (TypeError, ValueError):
        return None
    return [x1, y1, x2, y2] if 0 <= x1 < x2 and 0 <= y1 < y2 else None


# How each layout is read: the one table of them (LAYOUTS, what the CLI and the Home page offer, adds "auto").
READERS = {"folder": read_folder, "table": read_table, "deepfashion": read_deepfashion}
LAYOUTS = ("auto", *READERS)
