"""MN (EfficientAT MobileNetV3) under ONNX Runtime: its pieces of their own length, and the export against
torch on clips well under a snippet, just under, exactly one, several with a partial last one and a
dropped short tail, alone and in a padded batch of mixed lengths, at tiny size and at a released width.

MN's own initialisation (EfficientAT's: Kaiming fan-out, also on the depthwise convolutions) makes the
features of a deep random network vanish (about 1e-7 at the last layer of the tiny one), so every clip
would embed as the projection's bias and any export would "match". ``lively`` gives the network weights
that keep its activations of order one (fan-in convolutions, random BatchNorm statistics), as trained
weights do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from soundsift.checkpoints.format import save_model  # noqa: E402
from soundsift.export.onnx import TOLERANCE, export_onnx  # noqa: E402
from soundsift.export.pieces import own_length_pieces  # noqa: E402
from soundsift.export.runtime import OnnxModel  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402

RATE = 32000
WHOLE = {"name": "mn", "size": "tiny"}
SNIPPETS = {"name": "mn", "size": "tiny", "segment_seconds": 1.0, "min_remainder_seconds": 0.25}
# seconds: under the 514 samples the front end pads to, well under a snippet, just under, exactly one, one
# and a dropped 0.1-s tail (under min_remainder), several with a kept partial last one
SECONDS = [0.01, 0.3, 0.999, 1.0, 1.1, 2.2, 3.7]


def lively(model: DualEncoder, seed: int = 0) -> DualEncoder:
    """Random weights that keep MN's activations of order one (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.audio.model.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / mod.weight.shape[1] ** 0.5)
    return model


def mn_model(audio: dict, seed: int = 0) -> DualEncoder:
    torch.manual_seed(seed)
    model = lively(DualEncoder(audio, "tiny-bert", embed_dim=8).eval(), seed)
    model.identity = f"test-mn-{seed}"
    return model


def waves_of(seconds, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(max(1, int(s * RATE)))).astype(np.float32) for s in seconds]


@torch.no_grad()
def torch_alone(model: DualEncoder, waves) -> np.ndarray:
    """Each clip through the torch model on its own (batch of one, no padding)."""
    return np.concatenate([model.encode_audio(torch.from_numpy(w)[None]).numpy() for w in waves])


@torch.no_grad()
def torch_padded(model: DualEncoder, waves) -> np.ndarray:
    """All clips through the torch model in one zero-padded batch with their lengths."""
    batch = torch.zeros(len(waves), max(len(w) for w in waves))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return model.encode_audio(batch, torch.tensor([len(w) for w in waves])).numpy()


# ------------------------------------------------------------------------------- pieces, by hand


def test_own_length_pieces_by_hand():
    waves = [np.arange(1, n + 1, dtype=np.float32) for n in (2, 9, 10, 12, 25)]
    pieces, owner, valid = own_length_pieces(waves, window=10, min_remainder=3, min_piece=4)
    # 2: alone, padded to 4; 9: alone; 10: one snippet; 12: one snippet, its 2-sample tail dropped (< 3);
    # 25: snippets of 10, 10 and a kept 5 (zero-padded to the window)
    assert [len(p) for p in pieces] == [4, 9, 10, 10, 10, 10, 10]
    assert owner.tolist() == [0, 1, 2, 3, 4, 4, 4]
    assert valid.tolist() == [2, 9, 10, 10, 10, 10, 5]
    assert pieces[0].tolist() == [1, 2, 0, 0] and pieces[1].tolist() == list(range(1, 10))
    assert pieces[6].tolist() == [21, 22, 23, 24, 25, 0, 0, 0, 0, 0]
    assert pieces[3].tolist() == list(range(1, 11)) and pieces[5].tolist() == list(range(11, 21))
    # window 0 (MN without snippets): every clip one piece of its own length
    pieces, owner, valid = own_length_pieces(waves, min_piece=4)
    assert [len(p) for p in pieces] == [4, 9, 10, 12, 25] and valid.tolist() == [2, 9, 10, 12, 25]
    assert owner.tolist() == [0, 1, 2, 3, 4] and pieces[4].tolist() == waves[4].tolist()


# --------------------------------------------------------------------------- export against torch


@pytest.mark.slow
@pytest.mark.parametrize("audio", [WHOLE, SNIPPETS], ids=["whole", "snippets"])
def test_mn_export_equals_torch_alone_and_in_a_padded_batch(audio, tmp_path):
    model = mn_model(audio)
    report = export_onnx(model, tmp_path / "out")
    assert report.audio_max_diff <= TOLERANCE
    waves = waves_of(SECONDS)
    alone = torch_alone(model, waves)
    exported = OnnxModel(tmp_path / "out")
    for batch_size in (1, 3, len(waves)):  # the runtime groups pieces of equal length only
        assert np.abs(exported.embed_waveforms(waves, batch_size) - alone).max() <= TOLERANCE
    # torch's padded batch (the masked forward for short clips) gives each clip what it gets alone
    assert np.abs(torch_padded(model, waves) - alone).max() <= TOLERANCE
    assert np.abs(model.embed_waveforms(waves, len(waves)) - alone).max() <= TOLERANCE
    # the checks can fail: clips differ from one another by far more than the tolerance ...
    assert np.abs(alone[:, None] - alone[None]).max(-1)[~np.eye(len(waves), dtype=bool)].min() > 100 * TOLERANCE
    if audio is SNIPPETS:
        # ... a short clip zero-padded to the snippet length (what a fixed-size core would see) differs ...
        padded = np.pad(waves[1], (0, RATE - len(waves[1])))
        assert np.abs(torch_padded(model, [padded, waves[1]])[0] - alone[1]).max() > 100 * TOLERANCE
        # ... and the 1.1-s clip's 0.1-s tail is dropped: it embeds as its first second does
        np.testing.assert_allclose(alone[4], torch_alone(model, [waves[4][:RATE]])[0], atol=1e-6)


@pytest.mark.slow
def test_the_export_command_quantizes_mn_and_its_index_is_usable(tmp_path, capsys):
    import onnx

    from soundsift.cli.main import main

    model_file = save_model(mn_model(SNIPPETS, seed=2), tmp_path / "model.pt")
    assert main(["export", "onnx", "--model", str(model_file), str(tmp_path / "f32")]) == 0
    assert "largest difference from torch" in capsys.readouterr().out
    assert main(["export", "onnx", "--model", str(model_file), "--quantize", "int8", str(tmp_path / "i8")]) == 0
    f32, i8 = OnnxModel(tmp_path / "f32"), OnnxModel(tmp_path / "i8")
    assert i8.quantize == "int8" and i8.identity != f32.identity
    waves = waves_of([0.4, 2.5])
    a, b = f32.embed_waveforms(waves), i8.embed_waveforms(waves)
    assert ((a * b).sum(1) > 0.9).all() and np.abs(a - b).max() > 0  # close, not equal
    ops = {node.op_type for node in onnx.load(str(tmp_path / "i8" / "audio_core.onnx")).graph.node}
    assert "ConvInteger" in ops and "DynamicQuantizeLinear" in ops


@pytest.mark.slow
def test_a_released_width_exports_and_equals_torch(tmp_path):
    """mn10_as (width 1.0, random weights: the graph is the same whatever they are), 10-s snippets as the
    paper's configs use them."""
    torch.manual_seed(0)
    model = lively(DualEncoder({"name": "mn", "variant": "mn10_as", "pretrained": False, "segment_seconds": 10.0},
                               "tiny-bert", embed_dim=32).eval())
    model.identity = "test-mn10"
    assert model.audio.out_dim == 960
    export_onnx(model, tmp_path / "out")
    waves = waves_of([0.7, 10.0, 21.3])
    got = OnnxModel(tmp_path / "out").embed_waveforms(waves, 3)
    assert np.abs(got - torch_alone(model, waves)).max() <= TOLERANCE
