"""RetrievalMetrics (the torchmetrics object validation uses) against text_to_audio_metrics: in one
process, updated batch by batch, and in two (gloo), each process updating with half of the data."""

from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from soundsift.metrics import text_to_audio_metrics, text_to_audio_metrics_from_embeddings
from soundsift.training.metric import RetrievalMetrics


def data(seed: int = 0, n_audio: int = 40, per_audio: int = 3, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n_audio, dim, generator=g)
    target = torch.arange(n_audio).repeat_interleave(per_audio)
    captions = audio[target] + 1.5 * torch.randn(target.numel(), dim, generator=g)  # near their audio
    return audio, captions, target


def reference(audio, captions, target) -> dict[str, float]:
    return text_to_audio_metrics(F.normalize(audio, dim=1) @ F.normalize(captions, dim=1).T, target)


def test_one_process_in_batches_equals_the_function():
    audio, captions, target = data()
    expected = reference(audio, captions, target)
    assert 0 < expected["R@1"] < expected["R@10"] < 1  # neither trivial nor hopeless
    metric = RetrievalMetrics()
    order = torch.randperm(audio.shape[0], generator=torch.Generator().manual_seed(1))
    for rows in order.split(7):  # audios in a shuffled order, the captions in their own batches
        metric.update(audio[rows], captions[:0], rows, target[:0])
    for caps in torch.arange(captions.shape[0]).split(11):
        metric.update(audio[:1], captions[caps], [0], target[caps])  # audio 0 again: counted once
    got = metric.compute()
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == text_to_audio_metrics_from_embeddings(audio, captions, target)
    metric.reset()
    with warnings.catch_warnings(), pytest.raises(ValueError, match="before any update"):
        warnings.simplefilter("ignore")  # torchmetrics' own warning about the same thing
        metric.compute()


def test_a_caption_without_its_audio_is_refused():
    audio, captions, target = data()
    metric = RetrievalMetrics()
    metric.update(audio[:5], captions[:20], torch.arange(5), target[:20])  # captions of audios 0..6
    with pytest.raises(ValueError, match="audio index 5 was never added"):
        metric.compute()


def test_other_ks():
    audio, captions, target = data()
    metric = RetrievalMetrics(ks=(2, 3))
    metric.update(audio, captions, torch.arange(audio.shape[0]), target)
    assert set(metric.compute()) == {"mAP@10", "R@2", "R@3"}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        audio, captions, target = data()
        metric = RetrievalMetrics()
        # uneven halves, not aligned: a process's captions may belong to audios the other one added
        a_rows = torch.arange(audio.shape[0])[: 17] if rank == 0 else torch.arange(audio.shape[0])[17:]
        c_rows = torch.arange(captions.shape[0])[: 70] if rank == 0 else torch.arange(captions.shape[0])[70:]
        metric.update(audio[a_rows], captions[c_rows], a_rows, target[c_rows])
        result = metric.compute()
        with open(f"{out}.{rank}.json", "w", encoding="utf-8") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    audio, captions, target = data()
    one = RetrievalMetrics()
    one.update(audio, captions, torch.arange(audio.shape[0]), target)
    expected = one.compute()
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "result")), nprocs=2)
    for rank in range(2):
        got = json.loads((tmp_path / f"result.{rank}.json").read_text(encoding="utf-8"))
        assert got == expected, rank  # every process gets the whole set's metrics
    assert expected == pytest.approx(reference(audio, captions, target), abs=1e-12)
