"""Checks that need a GPU (``pytest -m gpu``; scripts/gpu_check.sh runs them on a GPU machine).

Without CUDA they are skipped, and say so: the CPU suite covers the same code paths on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from soundsift.model import DualEncoder

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]


def tiny() -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder({"name": "passt", "size": "tiny", "pretrained": False}, "tiny-bert", embed_dim=16)


def test_embeddings_on_cuda_match_the_cpu():
    model = tiny().eval()
    waves = [torch.randn(32000 * n).numpy() * 0.1 for n in (1, 2, 3)]
    cpu = model.embed_waveforms(waves)
    gpu = model.cuda().embed_waveforms(waves)
    assert abs(cpu - gpu).max() < 1e-3


def test_similarities_stay_float32_under_bf16_on_cuda():
    from soundsift.config import load_config
    from soundsift.training.module import RetrievalModule

    config = load_config("demo/stage1.yaml", ["model.audio_encoder={name: cnn, size: tiny}",
                                              "model.text_encoder={name: tiny-bert}", "model.embed_dim=8"])
    module = RetrievalModule.from_config(config).cuda()
    audio = torch.nn.functional.normalize(torch.randn(4, 8, device="cuda"), dim=1)
    text = torch.nn.functional.normalize(torch.randn(5, 8, device="cuda"), dim=1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        similarity, _ = module.similarities(audio, text, torch.arange(4), torch.arange(5))
    assert similarity.dtype == torch.float32 and torch.equal(similarity, audio @ text.T)


def test_a_training_step_runs_in_bf16_mixed(tmp_path):
    from soundsift.cli.main import main

    data = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(data)]) == 0
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={tmp_path / 'run'}",
                 "model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}",
                 "model.embed_dim=16", "optim.epochs=1", "trainer.accelerator=gpu",
                 "trainer.precision=bf16-mixed", "trainer.progress_bar=false"]) == 0
