"""ONNX export of the transformers audio towers (AST, CLAP's HTS-AT, LAION-CLAP unfused and fused): the
feature extractors re-implemented in torch (``frontends.hf_features``) against transformers' own, and
the exported towers against torch on clips cut into windows every way ``_WindowedHFEncoder._windows``
cuts them (under one window, a short tail dropped, a partial last window kept, under ``min_samples``,
empty, resampled input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from soundsift.encoders.frontends.hf_features import AstFeatures, ClapFeatures  # noqa: E402
from soundsift.encoders.hf_audio import TINY_CLAP, TINY_CLAP_FEATURES  # noqa: E402
from soundsift.export.manifest import MANIFEST  # noqa: E402
from soundsift.export.onnx import TOLERANCE, export_onnx  # noqa: E402
from soundsift.export.runtime import OnnxModel  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402


def pieces_of(waves: list[np.ndarray], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    pieces = np.zeros((len(waves), window), np.float32)
    for i, w in enumerate(waves):
        pieces[i, : len(w)] = w
    return torch.from_numpy(pieces), torch.tensor([len(w) for w in waves])


def at_least(waves: list[np.ndarray], n: int) -> list[np.ndarray]:
    """What the towers hand the extractor: pieces under ``n`` samples zero-padded to ``n``."""
    return [np.pad(w, (0, max(0, n - len(w)))) for w in waves]


# ------------------------------------------------------------------------ the extractors, in torch


def test_clap_padding_by_hand():
    from transformers import ClapFeatureExtractor

    # 8-sample windows (8 Hz, 1 s); three real samples
    extractor = ClapFeatureExtractor(feature_size=2, sampling_rate=8, hop_length=2, max_length_s=1, fft_window_size=4,
                                     frequency_max=4)
    pieces = torch.tensor([[1.0, 2.0, 3.0, 0, 0, 0, 0, 0], [1.0, 2.0, 3.0, 4.0, 5.0, 0, 0, 0]])
    valid = torch.tensor([3, 5])
    want = {"repeatpad": [[1, 2, 3, 1, 2, 3, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]],
            "repeat": [[1, 2, 3, 1, 2, 3, 1, 2], [1, 2, 3, 4, 5, 1, 2, 3]],
            "pad": [[1, 2, 3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]]}
    for padding, rows in want.items():
        got = ClapFeatures(extractor, "rand_trunc", padding, 1).pad(pieces, valid)
        assert got.tolist() == rows, padding
    # under min_samples, the zeros after the real samples are part of what is tiled
    assert ClapFeatures(extractor, "rand_trunc", "repeatpad", 4).pad(pieces[:1], valid[:1]).tolist() == [
        [1, 2, 3, 0, 1, 2, 3, 0]]


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_clap_features_equal_the_transformers_extractor(truncation, padding):
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(**TINY_CLAP_FEATURES, truncation=truncation, padding=padding)
    window, min_samples = extractor.nb_max_samples, extractor.fft_window_size
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (window, window - 1, 9001, 399, 1, 16000)]
    waves.append(np.zeros(5000, np.float32))  # silence: the 1e-10 floor, -100 dB
    want = extractor(at_least(waves, min_samples), sampling_rate=extractor.sampling_rate, return_tensors="np",
                     truncation=truncation, padding=padding)["input_features"]
    got = ClapFeatures(extractor, truncation, padding, min_samples)(*pieces_of(waves, window)).numpy()
    assert got.shape == (len(waves), 1) + want.shape[2:]
    if truncation == "fusion":  # a window that is not "longer": four copies of the one mel
        assert all(np.array_equal(want[:, c], want[:, 0]) for c in range(1, 4))
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=0, atol=1e-5)  # dB: float32 steps near -100


def test_ast_features_equal_the_transformers_extractor():
    from transformers import ASTFeatureExtractor

    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=128)
    window = 400 + 160 * 127  # exactly max_length frames
    rng = np.random.default_rng(1)
    lengths = (window, window - 1, 5000, 400, 559, 560, 399, 1)  # frame edges: 559 is one frame, 560 two
    waves = [(0.1 * rng.standard_normal(n) + 0.3).astype(np.float32) for n in lengths]  # a DC offset to remove
    want = extractor(at_least(waves, 400), sampling_rate=16000, return_tensors="np")["input_values"]
    got = AstFeatures(extractor, window, 400)(*pieces_of(waves, window)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    padded = (0.0 - extractor.mean) / (2 * extractor.std)
    assert np.all(got[5, 2:] == np.float32(padded)) and np.all(got[5, :2] != np.float32(padded))


# ---------------------------------------------------------------------- the towers against torch


@pytest.fixture(scope="module")
def fused_folder(tmp_path_factory):
    """A tiny random LAION-CLAP with fusion (aff_2d) and its extractor in fusion mode, in the hub layout."""
    from transformers import ClapConfig, ClapFeatureExtractor

    from soundsift.encoders.clap import TINY_TEXT, tiny_tokenizer
    from test_clap import random_clap

    folder = tmp_path_factory.mktemp("clap") / "clap-fused"
    tokenizer = tiny_tokenizer()
    audio = {**TINY_CLAP, "enable_fusion": True, "fusion_type": "aff_2d"}
    text = {k: v for k, v in TINY_TEXT.items() if k != "projection_dim"}
    config = ClapConfig(text_config={**text, "vocab_size": len(tokenizer)}, audio_config=audio, projection_dim=24)
    random_clap(config).save_pretrained(folder)
    features = {**TINY_CLAP_FEATURES, "feature_size": TINY_CLAP["num_mel_bins"]}
    ClapFeatureExtractor(**features, truncation="fusion", padding="repeatpad").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TOWERS = {
    "laion-clap": lambda folder: {"name": "laion-clap", "tiny": True},
    "laion-clap fused": lambda folder: {"name": "laion-clap", "model": str(folder), "pretrained": False},
    "laion-clap at 22.05 kHz": lambda folder: {"name": "laion-clap", "tiny": True, "input_sample_rate": 22050},
    "clap": lambda folder: {"name": "clap", "pretrained": False},
    "ast": lambda folder: {"name": "ast", "pretrained": False},
    "ast at 8 kHz": lambda folder: {"name": "ast", "pretrained": False, "input_sample_rate": 8000},
}


@pytest.mark.slow
@pytest.mark.parametrize("tower", sorted(TOWERS))
def test_each_transformers_tower_equals_torch_on_every_way_a_clip_is_cut(tower, fused_folder, tmp_path):
    torch.manual_seed(0)
    model = DualEncoder(TOWERS[tower](fused_folder), "tiny-bert", embed_dim=8).eval()
    model.identity = f"test-{tower}"
    if tower == "laion-clap fused":
        assert model.audio.truncation == "fusion" and model.audio.model.config.enable_fusion
    report = export_onnx(model, tmp_path / "out")
    assert report.audio_max_diff <= TOLERANCE
    exported = OnnxModel(tmp_path / "out")
    a = model.audio
    window = a.window_samples * a.sample_rate / a.model_rate  # in input samples
    lengths = [0, 50, int(0.3 * window),  # empty; under min_samples; under one window
               int(1.1 * window),  # a tail under a quarter window: dropped
               int(2.6 * window),  # two windows and a partial last one
               int(3 * window)]  # whole windows only
    rng = np.random.default_rng(5)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    want = model.embed_waveforms(waves, batch_size=3)
    got = exported.embed_waveforms(waves, batch_size=3)
    assert np.abs(got - want).max() <= TOLERANCE
    # the dropped tail really is dropped, and the partial window really counts
    alone = exported.embed_waveforms([waves[3][: int(window)], waves[4][: 2 * int(window)]])
    assert np.abs(alone[0] - got[3]).max() <= TOLERANCE < np.abs(alone[1] - got[4]).max()
    captions = ["Rain, on a tin roof!", "a dog"]
    assert np.abs(model.embed_texts(captions) - exported.embed_texts(captions)).max() <= TOLERANCE
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())["audio"]
    resampled = a.sample_rate != a.model_rate
    assert manifest["model_rate"] == (a.model_rate if resampled else 0) and manifest["window"] == a.window_samples
    from soundsift.checkpoints.windows import model_input_seconds

    assert manifest["segment"] == 0 and model_input_seconds(exported) is model_input_seconds(model) is None


@pytest.mark.slow
def test_a_clap_folder_loaded_as_laion_clap_exports_both_towers(fused_folder, tmp_path):
    """The published model's layout: ``load_model(FOLDER)`` gives LAION-CLAP's audio and text towers with
    identity projections (here the fused audio tower); both export."""
    from soundsift.checkpoints import load_model

    model = load_model(fused_folder, device="cpu")
    assert model.meta["published"] == "laion-clap" and model.audio.truncation == "fusion"
    report = export_onnx(model, tmp_path / "out")
    assert report.audio_max_diff <= TOLERANCE and report.text_max_diff <= TOLERANCE
    exported = OnnxModel(tmp_path / "out")
    waves = [(0.1 * np.random.default_rng(6).standard_normal(n)).astype(np.float32) for n in (700, 41000, 83000)]
    assert np.abs(model.embed_waveforms(waves) - exported.embed_waveforms(waves)).max() <= TOLERANCE
    captions = ["the dog barks", "The sound of rain, far away!"]
    assert np.abs(model.embed_texts(captions) - exported.embed_texts(captions)).max() <= TOLERANCE
    assert exported.tau == pytest.approx(model.tau) and exported.identity == model.identity


@pytest.mark.slow
@pytest.mark.parametrize("family", ["laion-clap", "clap", "ast"])
def test_the_export_command_writes_a_transformers_tower_and_int8(family, tmp_path, capsys):
    from soundsift.checkpoints.format import save_model
    from soundsift.cli.main import main

    torch.manual_seed(0)
    model = DualEncoder(TOWERS[family](None), "tiny-bert", embed_dim=8).eval()
    model_file = save_model(model, tmp_path / "model.pt")
    assert main(["export", "onnx", "--model", str(model_file), str(tmp_path / "f32")]) == 0
    assert "largest difference from torch" in capsys.readouterr().out
    assert main(["export", "onnx", "--model", str(model_file), "--quantize", "int8", str(tmp_path / "i8")]) == 0
    f32, i8 = OnnxModel(tmp_path / "f32"), OnnxModel(tmp_path / "i8")
    waves = [(0.1 * np.random.default_rng(2).standard_normal(n)).astype(np.float32) for n in (9000, 70000)]
    assert np.abs(f32.embed_waveforms(waves) - model.embed_waveforms(waves)).max() <= TOLERANCE
    a, b = f32.embed_waveforms(waves), i8.embed_waveforms(waves)
    cosine = (a * b).sum(1)
    assert i8.quantize == "int8" and np.all(cosine > 0.9) and not np.array_equal(a, b)
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "i8" / "audio_core.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "ConvInteger"}


@pytest.mark.slow
def test_an_index_built_on_onnx_runtime_with_a_transformers_tower_ranks_like_torch(tmp_path, monkeypatch):
    """``--runtime onnx`` exports the tower on demand; its builds cut files into the same windows (the
    tower declares no fixed input either way) and rank them as the torch build does."""
    import soundfile as sf

    from soundsift.checkpoints.format import save_model
    from soundsift.cli.main import main
    from soundsift.search.api import open_index

    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(3)
    audio = {"name": "laion-clap", "tiny": True, "input_sample_rate": 22050}
    model_file = save_model(DualEncoder(audio, "tiny-bert", embed_dim=8).eval(), tmp_path / "model.pt")
    rng = np.random.default_rng(3)
    (tmp_path / "lib").mkdir()
    for i in range(8):
        t = np.arange(int(44100 * (0.4 + 1.6 * i))) / 44100  # 0.4 to 11.6 s: several windows of 2 s
        tone = 0.3 * np.sin(2 * np.pi * (150 + 120 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(tmp_path / "lib" / f"clip{i}.wav", tone.astype(np.float32), 44100)
    for runtime in ("torch", "onnx"):
        assert main(["-q", "index", "build", str(tmp_path / "lib"), "--out", str(tmp_path / runtime), "--model",
                     str(model_file), "--runtime", runtime, "--no-progress"]) == 0
    manifests = [json.loads(next((tmp_path / r).glob("v*/manifest.json")).read_text()) for r in ("torch", "onnx")]
    assert manifests[1]["model"]["runtime"] == "onnx"
    assert manifests[0]["windows"]["window"] > 0 and manifests[0]["windows"] == manifests[1]["windows"]
    for query in ("a low hum", "a high beep", "noise"):
        by_torch = open_index(tmp_path / "torch").search(query, k=10, rank="files")
        by_onnx = open_index(tmp_path / "onnx").search(query, k=10, rank="files")
        assert [h.path for h in by_onnx] == [h.path for h in by_torch]
        np.testing.assert_allclose([h.score for h in by_onnx], [h.score for h in by_torch], atol=1e-4)
