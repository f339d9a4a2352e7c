"""`soundsift teachers` started as several processes (torchrun) writes the file one process writes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from soundsift.cli.main import main
from soundsift.correspondences import TeacherEmbeddings

pytestmark = pytest.mark.slow


def _worker(rank: int, world: int, port: int, model: str, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    from soundsift.training.teachers import make_teacher

    make_teacher(model, data, out, progress=False)
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_single_process_teacher_file(tmp_path):
    from soundsift import DualEncoder, save_model

    data = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(data)]) == 0
    torch.manual_seed(0)
    model = save_model(DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=16), tmp_path / "m.pt")
    assert main(["-q", "teachers", "--model", str(model), "--data-root", str(data), "--out",
                 str(tmp_path / "one.safetensors")]) == 0
    mp.spawn(_worker, args=(2, free_port(), str(model), str(data), str(tmp_path / "two.safetensors")), nprocs=2)
    one, two = (TeacherEmbeddings.load(tmp_path / f"{n}.safetensors") for n in ("one", "two"))
    assert list(two.clip_ids) == list(one.clip_ids) and list(two.caption_texts) == list(one.caption_texts)
    assert torch.equal(two.caption_clip, one.caption_clip)
    assert float((two.audio.float() - one.audio.float()).abs().max()) < 1e-5
    assert float((two.captions.float() - one.captions.float()).abs().max()) < 1e-5
    assert len(one.clip_ids) > 10  # a split worth splitting (each process took half)
