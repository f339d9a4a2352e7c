"""DCASE 2025 multi-relevance evaluation: both AP@k normalisations, R@k, the relevance files (read,
write, download, synth), `evaluate --relevance` and `evaluate` with several models."""

from __future__ import annotations

import ast
import csv
import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsift.checkpoints import load_model, save_model
from soundsift.cli.main import main
from soundsift.data.download import DCASE2025_SHA256, download_dcase2025_relevance
from soundsift.data.relevance import (
    MISSING_FILE,
    NOT_A_CAPTION,
    match_relevance,
    read_relevance,
    write_relevance,
)
from soundsift.data.synth.benchmark import generate, load_ground_truth
from soundsift.errors import ChecksumError, DatasetError
from soundsift.metrics import (
    ap_at_k_from_ranks,
    average_precision_at_k,
    first_relevant_ranks,
    map_at_k,
    multi_relevance_metrics,
    recall_at_k_multi,
    text_to_audio_metrics,
    text_to_audio_ranks,
)
from soundsift.model import DualEncoder
from soundsift.training.embed import embed_dataset


# ------------------------------------------------------------------------------------ naive reference
def naive_ranks(scores: list[float], relevant: list[bool], ties: str) -> list[int]:
    """0-based positions of the relevant items in a sorted list (ties: non-relevant first when pessimistic)."""
    first = 0 if ties == "pessimistic" else 1
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], first if not relevant[i] else 1 - first))
    return sorted(pos for pos, i in enumerate(order) if relevant[i])


def naive_ap(scores: list[float], relevant: list[bool], k: int, normalise: str, ties: str = "pessimistic") -> float:
    """The DCASE 2025 baseline's loop (by #relevant) or the textbook AP@k (by min(#relevant, k))."""
    ranks = naive_ranks(scores, relevant, ties)
    if not ranks:
        return math.nan
    total = 0.0
    for i, rank in enumerate(ranks, start=1):
        if rank >= k:
            break
        total += i / (rank + 1)
    return total / (len(ranks) if normalise == "relevant" else min(len(ranks), k))


def column(sim: torch.Tensor, j: int) -> list[float]:
    return sim[:, j].tolist()


# ------------------------------------------------------------------------------------- hand-made
def ranked(positions: set[int], n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """One caption over n audios scored n..1 (audio i at rank i + 1); relevant at the 1-based positions."""
    sim = torch.arange(n, 0, -1, dtype=torch.float64)[:, None]
    rel = torch.tensor([[i + 1 in positions] for i in range(n)])
    return sim, rel


@pytest.mark.parametrize(
    "positions,k,relevant,min_k",
    [
        ({2, 4}, 4, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2),  # the second relevant exactly at k
        ({2, 5}, 4, (1 / 2) / 2, (1 / 2) / 2),  # ... and at k + 1: it counts for nothing
        ({1, 2, 4}, 2, 2 / 3, 1.0),  # k below the relevant count: min_k reaches 1, the baseline cannot
        ({2, 3, 5}, 2, (1 / 2) / 3, (1 / 2) / 2),
        ({1, 3, 6, 7}, 16, (1 + 2 / 3 + 3 / 6 + 4 / 7) / 4, (1 + 2 / 3 + 3 / 6 + 4 / 7) / 4),
        ({8}, 7, 0.0, 0.0),
    ],
)
def test_hand_computed(positions, k, relevant, min_k):
    sim, rel = ranked(positions)
    assert average_precision_at_k(sim, rel, k, normalise="relevant").item() == pytest.approx(relevant, abs=1e-15)
    assert average_precision_at_k(sim, rel, k, normalise="min_k").item() == pytest.approx(min_k, abs=1e-15)
    assert naive_ap(column(sim, 0), rel[:, 0].tolist(), k, "relevant") == pytest.approx(relevant)


def test_one_relevant_clip_is_the_single_relevance_map():
    gen = torch.Generator().manual_seed(3)
    sim = torch.round(torch.rand(30, 50, generator=gen, dtype=torch.float64) * 20) / 20  # ties
    target = torch.randint(0, 30, (50,), generator=gen)
    rel = torch.zeros_like(sim, dtype=torch.bool)
    rel[target, torch.arange(50)] = True
    for k in (1, 10, 16):
        expected = ap_at_k_from_ranks(text_to_audio_ranks(sim, target), k)
        for normalise in ("relevant", "min_k"):
            np.testing.assert_allclose(average_precision_at_k(sim, rel, k, normalise=normalise), expected)
    single = text_to_audio_metrics(sim, target)
    multi = recall_at_k_multi(sim, rel)
    assert multi == pytest.approx({k: single[k] for k in ("R@1", "R@5", "R@10")})


def test_tie_between_a_relevant_and_a_non_relevant_clip():
    sim = torch.tensor([[0.5], [0.5], [0.1]], dtype=torch.float64)
    rel = torch.tensor([[True], [False], [False]])
    assert average_precision_at_k(sim, rel, 16, "pessimistic", "relevant").item() == pytest.approx(0.5)
    assert average_precision_at_k(sim, rel, 16, "optimistic", "relevant").item() == pytest.approx(1.0)
    assert first_relevant_ranks(sim, rel).tolist() == [2]
    assert first_relevant_ranks(sim, rel, ties="optimistic").tolist() == [1]


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("k,decimals", [(16, None), (3, 1), (10, 1), (40, 2)])
def test_random_inputs_against_the_naive_loop(ties, k, decimals):
    gen = torch.Generator().manual_seed(100 + k)
    sim = torch.rand(35, 60, generator=gen, dtype=torch.float64)
    if decimals is not None:
        sim = torch.round(sim * 10**decimals) / 10**decimals
    rel = torch.rand(35, 60, generator=gen) < 0.2
    rel[:, 0] = False  # no relevant audio: NaN, left out of the mean
    rel[:, 1] = True  # every audio relevant
    for normalise in ("relevant", "min_k"):
        expected = [naive_ap(column(sim, j), rel[:, j].tolist(), k, normalise, ties) for j in range(60)]
        got = average_precision_at_k(sim, rel, k, ties, normalise)
        assert math.isnan(got[0].item())
        np.testing.assert_allclose(got[1:].numpy(), expected[1:], rtol=1e-12)
        assert map_at_k(sim, rel, k, ties, normalise) == pytest.approx(np.nanmean(expected))
    hits = {f"R@{n}": np.mean([naive_ranks(column(sim, j), rel[:, j].tolist(), ties)[0] < n for j in range(1, 60)])
            for n in (1, 5, 10)}
    assert recall_at_k_multi(sim, rel, ties=ties) == pytest.approx(hits)


def test_the_two_normalisations_differ_and_metrics_names_them():
    gen = torch.Generator().manual_seed(7)
    sim = torch.rand(40, 20, generator=gen, dtype=torch.float64)
    rel = torch.rand(40, 20, generator=gen) < 0.5  # ~20 relevant per query: more than k
    out = multi_relevance_metrics(sim, rel)
    assert out["mAP@10"] == pytest.approx(map_at_k(sim, rel, 10, normalise="relevant"))
    assert out["mAP@10_min_k"] == pytest.approx(map_at_k(sim, rel, 10, normalise="min_k"))
    assert out["mAP@16"] < out["mAP@16_min_k"]
    assert out["n_queries"] == 20 and out["mAP@16_ci95"][0] < out["mAP@16"] < out["mAP@16_ci95"][1]
    with pytest.raises(ValueError, match="normalise"):
        map_at_k(sim, rel, 10, normalise="dcase")


# ------------------------------------------------------------------------------------ relevance files
# The published file's layout: header, quoted fields only where needed, the list written by str(list),
# HTML entities in some names (&#39;); plus captions with quotes and commas and names with spaces.
DCASE_TEXT = (
    "\ufeffquery,audio_filenames\n"
    "\"A Bicycle rides past people walking, while birds are singing.\",\"['bird_in_rain.wav', 'Stream Honiton.wav']\"\n"
    "A babbling brook full of water is gushing past.,\"['Small watetfall.wav', 'Pensol - le Moulin cours d&#39;eau.wav']\"\n"
    "A UFO sound is being made from a video game.,['SYnth_NoisesAX8.wav']\n"
    "\"A man says \"\"hello, there\"\" twice, then leaves\",\"[\"\"kid's room, night.wav\"\", 'a b  c.wav']\"\n"
)


def test_reader_on_the_dcase_2025_layout(tmp_path):
    path = tmp_path / "metadata_eval.csv"
    path.write_text(DCASE_TEXT, encoding="utf-8")
    rel = read_relevance(path)
    assert rel.layout == "dcase2025" and len(rel.queries) == 4
    assert rel.queries[0].query == "A Bicycle rides past people walking, while birds are singing."
    assert rel.queries[1].files == ("Small watetfall.wav", "Pensol - le Moulin cours d&#39;eau.wav")
    assert rel.queries[2].files == ("SYnth_NoisesAX8.wav",)
    assert rel.queries[3].query == 'A man says "hello, there" twice, then leaves'
    assert rel.queries[3].files == ("kid's room, night.wav", "a b  c.wav")
    assert [q.row for q in rel.queries] == [2, 3, 4, 5]


def test_writer_round_trips_and_is_what_the_baseline_reads(tmp_path):
    queries = {'He said "stop, now", twice': ["kid's room.wav", 'quote " and , comma.wav', "é ü.wav"],
               "plain": ["x.wav"]}
    path = write_relevance(tmp_path / "r.csv", queries)
    rel = read_relevance(path)
    assert {q.query: list(q.files) for q in rel.queries} == queries
    with open(path, newline="", encoding="utf-8") as f:  # as the baseline: csv + ast.literal_eval
        rows = list(csv.reader(f))
    assert rows[0] == ["query", "audio_filenames"]
    assert {r[0]: ast.literal_eval(r[1]) for r in rows[1:]} == queries
    assert not list(tmp_path.glob("*.tmp*"))


def test_reader_on_pairs_merges_rows_of_a_query(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('query,file\n"rain, then thunder",a b.wav\nwind,c.wav\n"rain, then thunder",d.wav\n'
                    '"rain, then thunder",a b.wav\n', encoding="utf-8")
    rel = read_relevance(path)
    assert rel.layout == "pairs"
    assert [(q.query, q.files, q.row) for q in rel.queries] == [
        ("rain, then thunder", ("a b.wav", "d.wav"), 2), ("wind", ("c.wav",), 3)]


@pytest.mark.parametrize(
    "text,message",
    [
        ("query,audio_filenames\nok,['a.wav']\nbad,\"[open('x')]\"\n", r"row 3: audio_filenames .* not a Python list"),
        ("query,audio_filenames\nbad,\"{'a': 1}\"\n", r"row 2: .* not a list of file names"),
        ("query,audio_filenames\nbad,[]\n", r"row 2: .* has no file name"),
        ("query,audio_filenames\nok,['a.wav']\nx,['a.wav'],extra\n", r"row 3: 3 fields for the 2 columns"),
        ('query,audio_filenames\n"",[\'a.wav\']\n', r"row 2: empty query"),
        ("query,file\nq,\n", r"row 2: empty file name"),
        ("caption,score\nq,1\n", r"expected columns query,audio_filenames"),
        ("query,audio_filenames\n", r"no queries"),
    ],
)
def test_malformed_rows_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as info:
        read_relevance(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_match_leaves_out_and_counts(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(DCASE_TEXT, encoding="utf-8")
    clips = ["bird_in_rain.wav", "Stream Honiton.wav", "Small watetfall.wav", "Pensol - le Moulin cours d'eau.wav",
             "kid's room, night.wav", "a b  c.wav"]
    captions = ["A Bicycle rides past people walking, while birds are singing.",
                "A babbling brook full of water is gushing past.", "A UFO sound is being made from a video game."]
    matched = match_relevance(read_relevance(path), clips, captions)
    # query 3's file is missing; query 4 is not a caption; query 2 matches through the HTML entity
    assert matched.texts == captions[:2]
    assert matched.left_out == {MISSING_FILE: 1, NOT_A_CAPTION: 1} and matched.n_left_out == 2
    assert matched.relevance.T.astype(int).tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]]
    assert any("SYnth_NoisesAX8.wav" in e for e in matched.examples)
    anyq = match_relevance(read_relevance(path), clips, None)
    assert len(anyq.texts) == 3 and anyq.relevance[:, 2].tolist() == [False] * 4 + [True, True]


# ------------------------------------------------------------------------------------------- download
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.log.append(self.path)
        body = self.server.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log = {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/resources"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_dcase2025_relevance(server, tmp_path, capsys):
    body = DCASE_TEXT.encode("utf-8")
    server.files["metadata_eval.csv"] = body
    with pytest.raises(ChecksumError, match=DCASE2025_SHA256[:12]):  # not the published bytes
        download_dcase2025_relevance(tmp_path / "a", base_url=server.base, progress=False)
    assert not (tmp_path / "a" / "relevance_evaluation.csv").exists()
    path = download_dcase2025_relevance(tmp_path / "a", base_url=server.base, progress=False,
                                        sha256=hashlib.sha256(body).hexdigest())
    assert path == tmp_path / "a" / "relevance_evaluation.csv" and path.read_bytes() == body
    assert server.log[-1] == "/resources/metadata_eval.csv"
    assert main(["-q", "download", "dcase2025", str(tmp_path / "b"), "--base-url", server.base, "--no-verify"]) == 0
    assert len(read_relevance(tmp_path / "b" / "relevance_evaluation.csv").queries) == 4
    server.files["metadata_eval.csv"] = b"<p>not here</p>\n"
    capsys.readouterr()
    assert main(["-q", "download", "dcase2025", str(tmp_path / "c"), "--base-url", server.base, "--no-verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert "relevance_evaluation.csv" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------ synth + evaluate
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    out = []
    for seed, rate in ((0, 16000), (1, 8000)):
        torch.manual_seed(seed)
        model = DualEncoder({"name": "cnn", "size": "tiny", "sample_rate": rate}, {"name": "tiny-bert"}, embed_dim=16)
        out.append(save_model(model, root / f"m{seed}.pt"))
    return out


def test_synth_writes_its_ground_truth_as_dcase_2025_annotations(synth):
    rel = read_relevance(synth / "relevance_evaluation.csv")
    gt = load_ground_truth(synth, "evaluation")
    names, captions = list(gt["file_names"]), list(gt["captions"])
    assert rel.layout == "dcase2025" and len(rel.queries) == len(set(captions))
    by_query = {q.query: set(q.files) for q in rel.queries}
    for j, text in enumerate(captions):
        truth = {names[i] for i in np.flatnonzero(gt["holds"][j])}
        assert truth <= by_query[text] and names[j // 5] in by_query[text]
    assert sum(len(q.files) for q in rel.queries) > len(rel.queries)  # several relevant clips somewhere
    assert any(" " in f for q in rel.queries for f in q.files)


def test_evaluate_relevance_end_to_end(synth, models, tmp_path, capsys):
    # the synth file plus a query that is not a caption and one with a file outside the split
    rel = read_relevance(synth / "relevance_evaluation.csv")
    queries = {q.query: list(q.files) for q in rel.queries}
    first = next(iter(queries))
    queries["a sound nobody wrote down"] = [queries[first][0]]
    queries[rel.queries[1].query] = queries[rel.queries[1].query] + ["missing.wav"]
    path = write_relevance(tmp_path / "r.csv", queries)
    capsys.readouterr()
    assert main(["-q", "evaluate", "--model", str(models[0]), "--data-root", str(synth), "--relevance", str(path)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    multi = result["multi_relevance"]
    assert "members" not in result
    assert multi["n_queries"] == len(queries) - 2 and multi["left_out"] == 2
    assert multi["left_out_reasons"] == {NOT_A_CAPTION: 1, MISSING_FILE: 1}
    assert "left out 2 of" in captured.err and len(captured.err.strip().splitlines()) == 1

    # independently: embed the split, score the kept queries with the baseline's loop
    model = load_model(models[0])
    emb, _ = embed_dataset(model, "clotho", synth, "evaluation", progress=False)
    kept = [q for q in rel.queries if q.query != rel.queries[1].query]
    q_emb = torch.from_numpy(model.embed_texts([q.query for q in kept]))
    sim = (emb.audio @ q_emb.T).double()
    for k in (16, 10):
        for normalise, key in (("relevant", f"mAP@{k}"), ("min_k", f"mAP@{k}_min_k")):
            aps = [naive_ap(column(sim, j), [c in q.files for c in emb.clip_ids], k, normalise)
                   for j, q in enumerate(kept)]
            assert multi[key] == pytest.approx(float(np.mean(aps)), abs=1e-6)
    first_hit = [naive_ranks(column(sim, j), [c in q.files for c in emb.clip_ids], "pessimistic")[0]
                 for j, q in enumerate(kept)]
    assert multi["R@5"] == pytest.approx(float(np.mean(np.array(first_hit) < 5)))

    assert main(["-q", "evaluate", "--model", str(models[0]), "--data-root", str(synth), "--relevance", str(path),
                 "--any-query"]) == 0
    assert json.loads(capsys.readouterr().out)["multi_relevance"]["n_queries"] == len(queries) - 1

    bad = tmp_path / "bad.csv"
    bad.write_text("query,audio_filenames\nq,['a.wav'\n", encoding="utf-8")
    assert main(["-q", "evaluate", "--model", str(models[0]), "--data-root", str(synth), "--relevance", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}, row 2" in err and len(err.splitlines()) == 1


def test_evaluate_an_ensemble_of_models_with_different_rates(synth, models, capsys):
    relevance = synth / "relevance_evaluation.csv"
    capsys.readouterr()
    args = ["-q", "evaluate", "--data-root", str(synth), "--relevance", str(relevance)]
    assert main([*args, "--model", str(models[0]), "--model", str(models[1])]) == 0
    result = json.loads(capsys.readouterr().out)
    singles = []
    for path in models:
        assert main([*args, "--model", str(path)]) == 0
        singles.append(json.loads(capsys.readouterr().out))
    members = result["members"]
    assert [m["model"] for m in members] == [str(p) for p in models]
    for member, single in zip(members, singles):
        assert member["mAP@10"] == pytest.approx(single["text_to_audio"]["mAP@10"])
        assert member["mAP@16"] == pytest.approx(single["multi_relevance"]["mAP@16"])
    assert result["ensemble_gain_mAP@10"] == pytest.approx(
        result["text_to_audio"]["mAP@10"] - max(m["mAP@10"] for m in members))
    assert result["ensemble_gain_mAP@16"] == pytest.approx(
        result["multi_relevance"]["mAP@16"] - max(m["mAP@16"] for m in members))

    # the ensemble's scores are the mean of the members' cosine similarities
    sims, qsims = [], []
    texts = [q.query for q in read_relevance(relevance).queries]
    for path in models:
        model = load_model(path)
        emb, _ = embed_dataset(model, "clotho", synth, "evaluation", progress=False)
        sims.append(emb.audio @ emb.captions.T)
        qsims.append(emb.audio @ torch.from_numpy(model.embed_texts(texts)).T)
    expected = text_to_audio_metrics(torch.stack(sims).mean(0), emb.caption_clip)
    assert result["text_to_audio"] == pytest.approx(expected)
    matched = match_relevance(read_relevance(relevance), emb.clip_ids, emb.caption_texts)
    assert result["multi_relevance"]["mAP@16"] == pytest.approx(
        map_at_k(torch.stack(qsims).mean(0), torch.from_numpy(matched.relevance), 16, normalise="relevant"))
    assert sims[0].shape == sims[1].shape and not torch.allclose(sims[0], sims[1])
