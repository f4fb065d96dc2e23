"""Command line: every stage the app runs, scriptable.

    python -m core prepare             fetch the built-in catalogue (set-up time), build embeddings + index + map
    python -m core prepare SOURCE      validate and register your own catalogue (folder, CSV/Parquet, DeepFashion)
    python -m core train               fine-tune a backbone (resumes an interrupted run of the same recipe)
    python -m core evaluate --json     test-split figures of the served model (--run ID for a fine-tuned one)
    python -m core search PHOTO        top-k catalogue items for a photo
    python -m core ship RUN            ship a finished run with the project (models/)
    python -m core bench --json        the README's speed and quality figures
    python -m core serve               start the dashboard
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from core.bench import BENCHMARKS, benchmark_module
from core.bench import DEFAULT as DEFAULT_BENCHMARK
from core.config import FREEZE_POLICIES, INFERENCE_MODES, RUNNERS, SCHEDULES, Settings, TrainConfig
from core.progress import tqdm_progress


class _JoinCatalogs(argparse.Action):
    """``--catalog a --catalog b`` is the union ``a+b`` (one flag given once is that catalogue)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{given}+{values}" if given else values)


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", action=_JoinCatalogs, help="catalogue name: garment-photos (default), "
                        "luma-shop, fashion-mnist, or one you prepared; given twice or more (or joined by '+'), the "
                        "catalogues as one, for training across photo styles (core/catalog/union.py)")
    parser.add_argument("--catalog-limit", type=int, help="use only the first N items (0 = all)")
    parser.add_argument("--backbone", help="efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2, …")
    parser.add_argument("--weights", type=Path, dest="weights_path", help="local state dict for the backbone")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--artifacts-dir", type=Path)


def _settings_args(parser: argparse.ArgumentParser) -> None:
    _source_args(parser)
    parser.add_argument("--run", help="a fine-tuned run's id (printed by `train`); default: the catalogue's newest "
                        "fine-tuned run (each built-in catalogue ships one), else ImageNet features; 'imagenet' for "
                        "ImageNet features")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--pca-dim", type=int, help="PCA dimension of the vectors (0 = raw features)")
    parser.add_argument("--pca-min-fit-items", type=int, help="no PCA for a catalogue with fewer train items "
                        "(default 2000)")
    parser.add_argument("--flip-average", action="store_const", const=True, help="embed every image with its "
                        "mirror image too and average (twice the embedding cost)")
    parser.add_argument("--shared-weight", type=float, help="weight of the shared-category space in the vectors of "
                        "a catalogue of a group (the built-in colour ones; default 0.75, 0 = off)")
    parser.add_argument("--category-rerank", type=float, help="put the predicted category's items first when the "
                        "prediction is at least this sure (0 = off, the default)")
    parser.add_argument("--pca-whiten", action="store_const", const=True, help="whiten the PCA (more precise, "
                        "harder for Annoy)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--inference", choices=INFERENCE_MODES, help="what runs the model: auto (default: cuda on a "
                        "GPU, else ONNX Runtime), cuda, onnx, torchscript, eager")
    parser.add_argument("--n-trees", type=int)
    parser.add_argument("--search-k", type=int)


def _runner_args(parser: argparse.ArgumentParser) -> None:
    """Who embeds the catalogue (dests named like the Settings fields, which ``_settings`` picks up)."""
    parser.add_argument("--runner", choices=RUNNERS, help="sequential (this process, default) or ray (Ray Data: "
                        "decode tasks and embedding actors on a Ray cluster; pip install -r requirements-scale.txt)")
    parser.add_argument("--ray-address", help="--runner ray: the cluster to join, e.g. HEAD:6379 ('auto': the one "
                        "`ray start` made here; default: start a local one on this machine)")
    parser.add_argument("--ray-shard-rows", type=int, help="--runner ray: rows per shard file, the unit of resume "
                        "(default: 4096)")


RECIPE = "recipe_"  # the dest prefix of the training recipe's flags: ``train --image-size`` is the recipe's


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with the flags this sub-command has for Settings fields (argparse dests named
    like the fields; the recipe's flags and the per-photo ``--isolate`` have dests of their own, so one flag never
    sets two things)."""
    return Settings.from_env(**{f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)})


def _served(settings: Settings) -> Settings:
    from core.search.serving import served_settings

    return served_settings(settings)


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (defaults: the CPU recipe in BENCHMARKS.md)."""
    defaults = TrainConfig()
    helps = {"freeze": f"one of {', '.join(FREEZE_POLICIES)}", "schedule": f"one of {', '.join(SCHEDULES)}",
             "trainable_blocks": "stages that learn with --freeze last", "triplet_weight": "weight of the batch-hard "
             "triplet loss (0 = off)", "val_fraction": "share of the train split held out for validation"}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, dest=RECIPE + f.name,
                                help=f"(default: {default})")
        else:
            parser.add_argument(flag, type=type(default), default=None, dest=RECIPE + f.name, metavar=f.name.upper(),
                                help=f"{helps.get(f.name, '')} (default: {default})".strip())


def _recipe(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, RECIPE + f.name) for f in fields(TrainConfig)}
    return TrainConfig(**{name: value for name, value in given.items() if value is not None})


def cmd_prepare(args: argparse.Namespace) -> int:
    from core.catalog import fashion_mnist
    from core.search.workspace import Workspace

    settings, out = _settings(args), {}
    if args.source:
        report = _prepare_source(args, settings)
        settings, out["catalog"] = settings.replace(catalog=report.name), report.summary()
    elif settings.catalog == fashion_mnist.NAME:
        print(f"Fashion-MNIST files: {fashion_mnist.fetch(settings.data_dir)}", file=sys.stderr)
    if not args.data_only:
        workspace = Workspace.open(_served(settings), tqdm_progress())
        workspace.prepare_map(tqdm_progress())  # the first Map visit then only reads it
        out["workspace"] = workspace.describe()
    if out:
        print(json.dumps(out if args.source else out["workspace"], indent=2, default=str))
    return 0


def _prepare_source(args: argparse.Namespace, settings: Settings):
    """Validate, summarise and register a user's catalogue (see core.catalog.prepare)."""
    from core.catalog.prepare import prepare_catalog
    from core.catalog.sources import SourceSpec, TableColumns

    columns = TableColumns(**{name: getattr(args, f"{name}_column") for name in TableColumns.__dataclass_fields__
                              if getattr(args, f"{name}_column")})
    spec = SourceSpec(path=str(Path(args.source).expanduser().resolve()), layout=args.layout, columns=columns,
                      allowed_roots=tuple(str(Path(r).expanduser().resolve()) for r in args.allow_root),
                      categories=tuple(c for c in args.categories.split(",") if c), per_category=args.per_category,
                      seed=settings.seed, tag_columns=tuple(args.tag_column))
    from core.threads import loader_workers

    report = prepare_catalog(spec, settings, name=args.name or "", photo_size=args.photo_size,
                             workers=loader_workers(settings), progress=tqdm_progress(), strict=args.strict,
                             keep_odd_shapes=args.keep_odd_shapes)
    summary = report.summary()
    if not args.json:  # the JSON summary goes to stdout with the rest
        print(f"catalogue {summary['catalog']!r}: {summary['items']:,} items in {len(summary['categories'])} "
              f"categories, splits {summary['splits']}", file=sys.stderr)
        for category, count in summary["categories"].items():
            print(f"  {count:>8,}  {category}", file=sys.stderr)
        print(f"tags ({len(summary['tags'])}): {', '.join(summary['tags']) or 'none'}", file=sys.stderr)
        print(f"{summary['skipped']} entries skipped, {summary['repaired']} repaired"
              f"{' (listed in ' + str(report.path / 'problems.csv') + ')' if len(report.problems) else ''}",
              file=sys.stderr)
        for problem in summary["problems"]:
            action = "skipped" if problem["skipped"] else "kept"
            print(f"  {problem['where']}: {problem['problem']} [{problem['entry']}] ({action})", file=sys.stderr)
    return report


def cmd_train(args: argparse.Namespace) -> int:
    import signal

    from core.training.trainer import TrainingStopped, train

    stop = {"requested": False}

    def request_stop(signum, frame) -> None:  # SIGTERM (the Model page's Stop) or Ctrl-C: end at the next step
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    settings = _settings(args)
    try:
        run = train(settings, _recipe(args), tqdm_progress(), should_stop=lambda: stop["requested"], fresh=args.fresh)
    except TrainingStopped as exc:
        print(f"training {exc}", file=sys.stderr)
        return 130
    figures = run.test_figures()
    print(f"run {run.id}: serve it with --run {run.id} (or pick it in the dashboard's sidebar)", file=sys.stderr)
    print(json.dumps({"run": run.id, "test": figures, "history": run.history()}, indent=2) if args.json
          else "\n".join(f"{k:>20}: {v}" for k, v in figures.items()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.training.trainer import evaluate_run

    figures = evaluate_run(_served(_settings(args)), tqdm_progress())
    print(json.dumps(figures, indent=2) if args.json else "\n".join(f"{k:>20}: {v}" for k, v in figures.items()))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from core.photo.decode import decode_image, read_image_file
    from core.search.workspace import Workspace

    # a bad file fails before the model loads, and what cannot be an image is refused before it is read
    photo = decode_image(read_image_file(args.photo), name=str(args.photo))
    workspace = Workspace.open(_served(_settings(args)), tqdm_progress())
    result = workspace.search(photo, k=args.k, exact=args.exact or None, isolate=args.isolate_photo)
    print(f"predicted ({result.predicted_by}): {', '.join(f'{c} {p:.0%}' for c, p in result.predicted[:3])}; "
          f"{result.latency_ms:.1f} ms ({result.method})")
    shown = [c for c in ("id", "category", "brand", "price", "split", "score") if c in result.hits.columns]
    print(result.hits[shown].to_string(index=False))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    benchmark = benchmark_module(args.benchmark)
    settings, progress = _settings(args), tqdm_progress()
    if benchmark.SERVED:  # the others make their own catalogues
        settings = _served(settings)
    results = benchmark.main(args, settings, progress)
    text = json.dumps(results, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text if args.json else "\n".join(f"{k:>26}: {v}" for k, v in results.items()))
    return 0


class _BenchParser(argparse.ArgumentParser):
    """One benchmark's sub-parser: the benchmark's own options are added (and its module imported) only when that
    sub-parser parses or prints its help, so that the others' heavy imports are not paid."""

    def __init__(self, *args, benchmark: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.benchmark, self._own_added = benchmark, False

    def add_own_arguments(self) -> argparse.ArgumentParser:
        if not self._own_added:
            self._own_added = True
            benchmark_module(self.benchmark).add_arguments(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.add_own_arguments()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.add_own_arguments()
        return super().format_help()


def _bench_args(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per benchmark: the shared settings, --json and --output, and the benchmark's own options."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK", parser_class=_BenchParser)
    for name, benchmark in BENCHMARKS.items():
        p = sub.add_parser(name, benchmark=name, help=benchmark.summary,
                           description=f"python -m core bench {name}: {benchmark.summary}")
        _settings_args(p)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--output", type=Path, help="also write the JSON here")
        p.set_defaults(func=cmd_bench)


def _bench_argv(argv: list[str]) -> list[str]:
    """``bench`` without a benchmark's name is the search benchmark, as it was before each benchmark had its own
    sub-command (``bench --json --warm`` → ``bench search --json --warm``); ``bench -h`` lists them, and a word
    that names no benchmark is argparse's error, which lists them too."""
    if argv[:1] != ["bench"]:
        return argv
    rest = argv[1:]
    if rest and not rest[0].startswith("-"):
        return argv
    named = next((token for token in rest if token in BENCHMARKS), None)  # `bench --json retrieval`, as before
    if named:
        return ["bench", named, *(token for token in rest if token != named)]
    return argv if {"-h", "--help"} & set(rest) else ["bench", DEFAULT_BENCHMARK, *rest]


def cmd_ship(args: argparse.Namespace) -> int:
    from core.search.serving import ship_run

    print(ship_run(_settings(args), args.run_id))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    app = Path(__file__).resolve().parent.parent / "streamlit_app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    return subprocess.call(command, env=os.environ.copy())


def main(argv: list[str] | None = None) -> int:
    from core.catalog.sources import LAYOUTS

    prog = "fashion-search" if Path(sys.argv[0]).name == "fashion-search" else "python -m core"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="get the built-in catalogue, or validate and register your own (SOURCE), "
                                       "then build embeddings + Annoy index")
    _settings_args(p)
    _runner_args(p)
    p.add_argument("source", nargs="?", help="your catalogue: a folder of category subfolders, a .csv/.parquet "
                   "table, or a DeepFashion folder")
    p.add_argument("--data-only", action="store_true", help="only get (or validate and register) the catalogue")
    p.add_argument("--name", help="name of your catalogue (default: from the source's file or folder name)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="how SOURCE is laid out (auto: from what is "
                   "there)")
    for name in ("image", "id", "category", "description", "tags", "brand", "price", "split", "group"):
        p.add_argument(f"--{name}-column", help=f"table: the column holding the {name} (default: {name})"
                       + ("; items of one group share a split (e.g. parent_sku, sender_id)" if name == "group" else ""))
    p.add_argument("--allow-root", action="append", default=[], help="table: a folder that absolute image paths "
                   "may point into (repeatable; the table's own folder is always allowed)")
    p.add_argument("--tag-column", action="append", default=[], help="table: a column whose values are tags too "
                   "(repeatable: --tag-column colour --tag-column material)")
    p.add_argument("--categories", default="", help="DeepFashion: comma-separated category names or garment "
                   "types (upper, lower, full) to keep")
    p.add_argument("--per-category", type=int, default=0, help="DeepFashion: a balanced random sample of N items "
                   "per category (0: all)")
    p.add_argument("--photo-size", type=int, default=224, help="side of the square the photos are resized and "
                   "centre-cropped to")
    p.add_argument("--keep-odd-shapes", action="store_true", help="index images under 16 px a side or beyond 20:1 "
                   "too (padded on white), instead of listing them as problems")
    p.add_argument("--strict", action="store_true", help="any entry with a problem is an error: nothing is "
                   "registered (exit status 2)")
    p.add_argument("--json", action="store_true", help="SOURCE: no readable summary on stderr (the JSON on "
                   "stdout has it all)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="fine-tune the backbone on the catalogue (resumes the same recipe's run)")
    _source_args(p)
    _recipe_args(p)
    p.add_argument("--fresh", action="store_true", help="discard this recipe's checkpoints and start over")
    p.add_argument("--json", action="store_true", help="print the run id, test figures and history as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test-split figures: top-1/3/5, precision@10, mAP@10 (and tag F1)")
    _settings_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("search", help="search the catalogue with a photo file")
    _settings_args(p)
    p.add_argument("photo", type=Path)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--exact", action="store_true", help="brute-force search instead of the served index")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None, dest="isolate_photo",
                   help="separate the garment from its surroundings first (default: the isolate setting)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("bench", help="figures: " + ", ".join(
                           f"{name} (default)" if name == DEFAULT_BENCHMARK else name for name in BENCHMARKS)
                       + " (python -m core bench --help lists them)",
                       description="The figures of BENCHMARKS.md, one benchmark at a time (`python -m core bench "
                                   "BENCHMARK --help` for its options); with no name, search.")
    _bench_args(p)

    p = sub.add_parser("ship", help="copy a finished run into models/ (served with its catalogue from the first "
                                    "start), with check.json for the test that reproduces it")
    _source_args(p)
    p.add_argument("run_id")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("serve", help="start the Streamlit dashboard")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_serve)

    argv = _bench_argv(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {_disk_full(exc, args) or exc}", file=sys.stderr)
        return 2


def _disk_full(exc: BaseException, args: argparse.Namespace) -> str:
    """A full disk as the operator can act on it: the folder, and what is free there. A build says how much it
    needs itself (core.artifacts.DiskFullError); a write elsewhere (the prepared table) gets the folder here."""
    from core.artifacts import DiskFullError, free_bytes, human_bytes, is_disk_full

    if isinstance(exc, DiskFullError) or not is_disk_full(exc):
        return ""
    folder = Path(getattr(exc, "filename", None) or "").parent if getattr(exc, "filename", None) else None
    if folder is None:
        try:
            folder = Path(getattr(args, "artifacts_dir", None) or Settings.from_env().artifacts_dir)
        except ValueError:
            return ""
    return (f"the disk holding {folder} is full ({human_bytes(free_bytes(folder))} free): {exc}. Free some space "
            "there (or set FVS_ARTIFACTS_DIR to a larger disk) and run it again; what was finished is kept.")


if __name__ == "__main__":
    sys.exit(main())
