"""The served index follows the catalogue's size (issue 27): exact where it is free, Annoy where it holds recall,
HNSW past that; what is chosen is measured, cached with the index, and rebuilt when damaged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import Settings
from core.search import served
from core.search.index import AnnoySearcher, ExactSearcher, HNSWSearcher
from core.search.served import IndexChoice, choose_index, exact_truth, measure, sample_rows
from core.search.workspace import Workspace, hnsw_name, index_choice_name


def clustered(n: int, d: int = 16, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres: neighbourhoods an index can find, like a catalogue's categories."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def annoy_for(vectors: np.ndarray, path, n_trees: int = 8, search_k: int = 50) -> AnnoySearcher:
    AnnoySearcher.build(vectors, path, n_trees=n_trees)
    return AnnoySearcher.load(path, vectors, search_k)


def no_hnsw() -> HNSWSearcher:
    raise AssertionError("HNSW was built where it is not served")


def test_auto_serves_exact_on_a_tiny_catalogue_and_the_index_on_a_large_one(tmp_path):
    vectors = clustered(3000)
    annoy = annoy_for(vectors, tmp_path / "a.ann")
    small = Settings(search_k=50, exact_max_items=5000)
    choice, searcher = choose_index(vectors, small, annoy, no_hnsw)
    assert choice.kind == "exact" and searcher.name == "exact" and choice.recall_at_10 == 1.0
    assert "exact_max_items" in choice.reason

    large = Settings(search_k=50, exact_max_items=1000, n_trees=8)
    choice, searcher = choose_index(vectors, large, annoy, no_hnsw)
    assert choice.kind == "annoy" and searcher.name == "annoy"
    assert choice.recall_at_10 >= served.TARGET_RECALL and choice.p50_ms <= served.BUDGET_MS
    assert searcher.search_k == choice.search_k >= 50
    # the smallest search_k that holds: every smaller one measured on the way fell short
    ladder = [row for row in choice.tried if row["index"] == "annoy"]
    assert [row["search_k"] for row in ladder] == [50 * 2**i for i in range(len(ladder))]
    assert all(row["recall_at_10"] < served.TARGET_RECALL for row in ladder[:-1])


def test_the_recorded_recall_is_the_measured_one(tmp_path):
    vectors = clustered(2000, d=32)
    annoy = annoy_for(vectors, tmp_path / "a.ann", n_trees=1)
    forced = Settings(index="annoy", n_trees=1, search_k=1)  # one tree, one node: most neighbours are missed
    choice, searcher = choose_index(vectors, forced, annoy, no_hnsw)
    rows = sample_rows(len(vectors), forced.seed)
    recall, _ = measure(searcher, vectors, rows, exact_truth(vectors, rows))
    assert choice.kind == "annoy" and choice.search_k == 1
    assert choice.recall_at_10 == recall < 0.5
    assert "0.5" not in choice.summary() and f"{recall:.3f}" in choice.summary()


def test_auto_serves_hnsw_where_annoy_cannot_hold_the_recall_within_the_budget(tmp_path, monkeypatch):
    vectors = clustered(1500)
    annoy = annoy_for(vectors, tmp_path / "a.ann", n_trees=1)
    monkeypatch.setattr(served, "BUDGET_MS", 0.0)  # no Annoy search is that fast
    built = []

    def build() -> HNSWSearcher:
        built.append(1)
        return HNSWSearcher.build(vectors, m=8, ef_construction=50, ef=32, num_threads=1)

    choice, searcher = choose_index(vectors, Settings(exact_max_items=100, hnsw_ef=32), annoy, build)
    assert built == [1] and choice.kind == "hnsw" and searcher.name == "hnsw" and searcher.ef == choice.ef == 32
    assert "short of recall" in choice.reason and [r["index"] for r in choice.tried][:2] == ["exact", "annoy"]
    rows = sample_rows(len(vectors), 0)
    assert choice.recall_at_10 == measure(searcher, vectors, rows, exact_truth(vectors, rows))[0]


def test_workspace_serves_exact_on_the_tiny_catalogue_and_compares_with_annoy(shared_workspace):
    ws = shared_workspace
    assert ws.index.name == "exact" and ws.compared.name == "annoy"
    assert ws.search_item(3, k=5).method == "exact"
    assert ws.search_item(3, k=5, exact=False).method == "annoy"
    info = ws.describe()
    assert info["index"] == "exact" and info["index_choice"]["recall_at_10"] == 1.0
    assert info["index_summary"].startswith("exact search: recall@10 1.000 on 64")


def test_the_choice_is_cached_with_the_index_and_made_again_when_its_inputs_change(settings, monkeypatch):
    first = Workspace.open(settings.replace(index="annoy", search_k=7))
    recorded = json.loads(first.store.file(index_choice_name(first.settings)).read_text())
    assert IndexChoice.from_dict(recorded) == first.index_choice and first.index.search_k == 7

    import core.search.workspace as workspace_module

    def fail(*args, **kwargs):
        raise AssertionError("the choice was measured again instead of loaded")

    monkeypatch.setattr(workspace_module, "choose_index", fail)
    again = Workspace.open(settings.replace(index="annoy", search_k=7))
    assert again.index_choice == first.index_choice and again.index.search_k == 7
    assert Workspace.is_built(settings.replace(index="annoy", search_k=7))
    assert not Workspace.is_built(settings.replace(index="annoy", search_k=8))  # another policy: not chosen yet
    with pytest.raises(AssertionError, match="measured again"):
        Workspace.open(settings.replace(index="annoy", search_k=8))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_a_damaged_hnsw_graph_is_rebuilt_not_trusted(settings, damage):
    settings = settings.replace(index="hnsw")
    good = Workspace.open(settings)
    assert good.index.name == "hnsw" and good.index_choice.kind == "hnsw"
    reference = good.search_item(0, k=5).hits["row"].tolist()
    path = good.store.file(hnsw_name(settings))
    size = path.stat().st_size
    if damage == "truncate":
        with path.open("r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    else:
        path.unlink()
    assert Workspace.is_built(settings) == (damage == "garbage")  # the cheap check compares sizes only
    reopened = Workspace.open(settings)
    assert reopened.store.verified(hnsw_name(settings)) and reopened.index.name == "hnsw"
    assert reopened.search_item(0, k=5).hits["row"].tolist() == reference
    # the rebuilt graph was measured again: what is recorded is the served graph's recall
    entry = reopened.store.meta()["files"][index_choice_name(settings)]
    assert entry["kind"] == "hnsw" and reopened.index_choice.recall_at_10 == 1.0


def test_hnsw_is_built_only_where_it_is_served(settings):
    ws = Workspace.open(settings)  # 64 items, auto: exact
    assert ws.index.name == "exact"
    assert not ws.store.file(hnsw_name(settings)).exists()


def test_index_setting_is_checked():
    with pytest.raises(ValueError, match="index must be one of auto, exact, annoy, hnsw"):
        Settings(index="fast")
    assert Settings.from_env({"FVS_INDEX": "hnsw", "FVS_EXACT_MAX_ITEMS": "5"}).exact_max_items == 5


def test_measured_recall_of_exact_search_is_one_and_ignores_the_query_itself():
    vectors = clustered(300)
    rows = sample_rows(300, 0, n=50)
    recall, p50 = measure(ExactSearcher(vectors), vectors, rows, exact_truth(vectors, rows))
    assert recall == 1.0 and p50 > 0
    assert len(rows) == 50 and len(set(rows.tolist())) == 50


def test_crossover_bench_reports_exact_and_annoy_at_each_size():
    from core.bench.crossover import run_crossover

    vectors = clustered(1200)
    labels = np.arange(1200) % 4
    report = run_crossover(vectors, labels, Settings(n_trees=4, search_k=20), sizes=(300, 1200, 1500))
    assert [row["n"] for row in report["rows"]] == [300, 1200, 1500]
    assert [row["source"] for row in report["rows"]] == ["real", "real", "synthetic"]
    for row in report["rows"]:
        assert row["exact_p50_ms"] > 0 and row["annoy_p50_ms"] > 0 and row["annoy_search_k"] >= 20
        assert row["annoy_holds"] == (row["annoy_recall_at_10"] >= served.TARGET_RECALL)
    faster = [r["n"] for r in report["rows"] if r["annoy_holds"] and r["annoy_p50_ms"] < r["exact_p50_ms"]]
    assert report["crossover_n"] == (faster[0] if faster else None)


def test_retrieval_lab_measures_what_would_be_served(tmp_path):
    from core.bench.retrieval import build_methods, truth_top_k
    from core.bench.retrieval import measure as lab_measure

    vectors = clustered(1500)
    choices: dict = {}
    built = build_methods(vectors, Settings(n_trees=4, search_k=50, exact_max_items=1000), tmp_path,
                          methods=("exact", "served"), choices=choices)
    assert set(built) == {"exact", "served"}
    assert choices["served"].kind == "annoy" and built["served"][0].search_k == choices["served"].search_k
    queries = np.arange(0, 1500, 15)
    figures = lab_measure(built["served"][0], vectors, np.arange(1500) % 4, queries, truth_top_k(vectors, queries))
    assert figures["recall_at_10"] >= 0.9  # another sample than the choice's, same index
