"""ONNX export (``soundsift.export``): exportable spectra, the numpy splitting and pooling beside the graphs,
every encoder family at tiny size against torch, refused folders, and the ONNX runtime in index and search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from soundsift.checkpoints.format import save_model  # noqa: E402
from soundsift.encoders.base import AudioEncoder  # noqa: E402
from soundsift.encoders.frontends import spectrum  # noqa: E402
from soundsift.encoders.layers import average_by_owner, split_snippets  # noqa: E402
from soundsift.errors import ExportError, MissingDependencyError  # noqa: E402
from soundsift.export.manifest import MANIFEST  # noqa: E402
from soundsift.export.onnx import TOLERANCE, export_onnx  # noqa: E402
from soundsift.export.pieces import pool_pieces, split_pieces  # noqa: E402
from soundsift.export.runtime import OnnxModel  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ----------------------------------------------------------------------------------- exportable spectra


@pytest.fixture
def exporting(monkeypatch):
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)


def naive_power(frames: np.ndarray, n_fft: int) -> np.ndarray:
    """|DFT|^2 by the definition, in float64."""
    x = np.zeros(frames.shape[:-1] + (n_fft,))
    x[..., : min(n_fft, frames.shape[-1])] = frames[..., :n_fft]
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    basis = np.exp(-2j * np.pi * k * n / n_fft)
    return np.abs(x @ basis.T) ** 2


@pytest.mark.parametrize("n_in,n_fft", [(400, 512), (64, 64), (37, 64)])
def test_the_export_path_of_rfft_power_is_the_dft(exporting, n_in, n_fft):
    frames = np.random.default_rng(0).standard_normal((3, 5, n_in)).astype(np.float32)
    got = spectrum.rfft_power(torch.from_numpy(frames), n_fft).numpy()
    np.testing.assert_allclose(got, naive_power(frames, n_fft), rtol=1e-5, atol=1e-4)


def test_the_export_path_of_framing_and_stft_equals_torch(exporting):
    x = torch.randn(2, 3001)
    assert torch.equal(spectrum.frame_signal(x, 400, 160), x.unfold(-1, 400, 160))
    window = torch.hann_window(800, periodic=False)
    want = torch.stft(x, 1024, 320, win_length=800, window=window, center=True, return_complex=True).abs() ** 2
    got = spectrum.stft_power(x, 1024, 320, window, 800)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------- splitting and pooling in numpy


def test_snippets_and_their_weighted_mean_match_the_torch_towers():
    rng = np.random.default_rng(1)
    window, min_rem = 50, 12
    waves = [rng.standard_normal(n).astype(np.float32) for n in (7, 50, 51, 61, 63, 149, 230)]
    pieces, owner, valid = split_pieces(waves, "snippets", window, min_remainder=min_rem)
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), longest)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    lengths = torch.tensor([len(w) for w in waves])
    t_pieces, t_owner, t_valid = split_snippets(batch, lengths, window, min_rem)
    np.testing.assert_array_equal(pieces, t_pieces.numpy())
    np.testing.assert_array_equal(owner, t_owner.numpy())
    np.testing.assert_array_equal(valid, t_valid.numpy())
    values = rng.standard_normal((len(pieces), 3)).astype(np.float32)
    weights = rng.integers(1, 5, len(pieces))
    want = average_by_owner(torch.from_numpy(values), t_owner, len(waves), torch.from_numpy(weights)).numpy()
    np.testing.assert_allclose(pool_pieces(values, owner, len(waves), "mean", weights=weights), want, rtol=1e-5)


def test_patches_by_hand_and_max_and_topk_pooling():
    wave = np.arange(1, 26, dtype=np.float32)  # 25 samples, windows of 10 every 5: 1 + ceil(15 / 5) = 4
    pieces, owner, valid = split_pieces([wave, wave[:3]], "patches", 10, hop=5)
    assert pieces.shape == (5, 10) and owner.tolist() == [0, 0, 0, 0, 1]
    assert pieces[3].tolist() == [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]
    assert pieces[4].tolist() == [1, 2, 3] + [0] * 7 and valid.tolist() == [10, 10, 10, 10, 3]
    values = np.array([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    assert pool_pieces(values, owner, 2, "max").tolist() == [[3.0, 4.0], [5.0, 5.0]]
    assert pool_pieces(values, owner, 2, "topk", k=2).tolist() == [[2.5, 3.0], [5.0, 5.0]]
    assert pool_pieces(values, owner, 2, "mean").tolist() == [[1.5, 1.75], [5.0, 5.0]]


# ------------------------------------------------------------------------------ every family vs torch

EXPORTABLE = {
    "cnn": {"name": "cnn", "size": "tiny"},
    "crnn": {"name": "crnn", "size": "tiny"},
    "patchformer": {"name": "patchformer", "size": "tiny"},
    "passt": {"name": "passt", "size": "tiny"},
    "atst": {"name": "atst", "size": "tiny"},
    "yamnet": {"name": "yamnet", "tiny": True},
    "ast": {"name": "ast", "pretrained": False},
    "clap": {"name": "clap", "pretrained": False},
    "laion-clap": {"name": "laion-clap", "tiny": True},
}
# mn exports too: tests/test_onnx_mn.py (its tiny random network needs lively weights)


def tiny_model(audio, seed=0) -> DualEncoder:
    torch.manual_seed(seed)
    model = DualEncoder(audio, "tiny-bert", embed_dim=8).eval()
    model.identity = f"test-{audio['name']}-{seed}"
    return model


def bridge_model() -> DualEncoder:
    torch.manual_seed(0)
    model = DualEncoder({"name": "yamnet-bridge", "tiny": True, "space": "classes", "power": 0.5, "pooling": "topk"},
                        {"name": "yamnet-classes", "tiny": True}, embed_dim=521, audio_projection="identity",
                        text_projection="identity").eval()
    model.identity = "test-bridge"
    return model


def assert_same_as_torch(model, folder, seconds):
    exported = OnnxModel(folder)
    rng = np.random.default_rng(7)
    rate = model.sample_rate
    waves = [(0.1 * rng.standard_normal(int(s * rate))).astype(np.float32) for s in seconds]
    diff = np.abs(model.embed_waveforms(waves, 3) - exported.embed_waveforms(waves, 3)).max()
    assert diff <= TOLERANCE, diff
    captions = ["Rain, on a tin roof!", "a dog", "BIRDS singing at dawn near a river and a road"]
    assert np.abs(model.embed_texts(captions) - exported.embed_texts(captions)).max() <= TOLERANCE
    assert exported.identity == model.identity and exported.embed_dim == model.embed_dim


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(EXPORTABLE))
def test_every_exportable_family_equals_torch_at_several_lengths(family, tmp_path):
    model = tiny_model(EXPORTABLE[family])
    report = export_onnx(model, tmp_path / "out")
    assert report.audio_max_diff <= TOLERANCE and report.text_max_diff <= TOLERANCE
    # lengths the export's own check did not use; 10-s snippet families get three snippets and a part
    assert_same_as_torch(model, tmp_path / "out", [0.3, 2.2, 4.9, 31.3 if family in ("passt", "atst") else 7.7])
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["opset"] == 17 and manifest["soundsift_version"] and manifest["audio"]["inputs"]["core"]


@pytest.mark.slow
def test_the_zero_shot_bridge_exports_with_its_pooling_and_head(tmp_path):
    model = bridge_model()
    export_onnx(model, tmp_path / "out")
    assert_same_as_torch(model, tmp_path / "out", [0.2, 0.96, 1.5, 6.1])


class _LengthDependent(AudioEncoder):
    """A whole-clip tower whose output depends on the clip length through a Python int, which a trace
    freezes at the traced length: its export cannot equal torch at other lengths."""

    sample_rate = 16000
    out_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, waveform, lengths=None):
        n = float(waveform.shape[1]) / self.sample_rate
        return torch.stack([waveform.mean(1) + n, lengths.to(waveform) / self.sample_rate], 1) * self.scale


def test_a_tower_that_cannot_export_says_so_in_one_line(tmp_path):
    """Every registered family exports; a tower whose graph depends on the length is refused by the
    check against torch in one line naming the tower, and nothing is published."""
    model = tiny_model(EXPORTABLE["cnn"])
    model.audio = _LengthDependent()
    model.audio_proj = torch.nn.Linear(2, model.embed_dim)
    with pytest.raises(ExportError, match="_LengthDependent.* cannot export to ONNX: its graph differs from torch") as err:
        export_onnx(model, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------- refused input


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "cnn"
    export_onnx(tiny_model(EXPORTABLE["cnn"]), folder)
    return folder


def copy_with(folder: Path, dest: Path, change) -> Path:
    import shutil

    shutil.copytree(folder, dest)
    doc = json.loads((dest / MANIFEST).read_text())
    change(doc)
    (dest / MANIFEST).write_text(json.dumps(doc))
    return dest


def test_a_folder_from_another_soundsift_version_is_refused_in_one_line(exported, tmp_path):
    folder = copy_with(exported, tmp_path / "old", lambda d: d.update(soundsift_version="0.0.1"))
    with pytest.raises(ExportError, match="exported by soundsift 0.0.1") as err:
        OnnxModel(folder)
    assert "\n" not in str(err.value)


def test_a_graph_whose_inputs_differ_from_its_manifest_is_refused(exported, tmp_path):
    def rename(doc):
        doc["audio"]["inputs"]["core"] = {"audio": doc["audio"]["inputs"]["core"]["waveform"]}

    model = OnnxModel(copy_with(exported, tmp_path / "bad", rename))  # graphs open on first use
    with pytest.raises(ExportError, match="audio_core.onnx: the graph's inputs .* do not match") as err:
        model.embed_waveforms([np.zeros(1600, np.float32)])
    assert "\n" not in str(err.value)


def test_the_onnx_runtime_without_onnxruntime_says_how_to_install_it(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'soundsift\[onnx\]'"):
        OnnxModel(exported)


def test_an_export_refuses_a_folder_in_use_and_load_model_reads_it(exported, tmp_path):
    import soundsift

    with pytest.raises(ExportError, match="already exists"):
        export_onnx(tiny_model(EXPORTABLE["cnn"]), exported)
    assert isinstance(soundsift.load_model(exported), OnnxModel)


def test_the_weights_lie_beside_each_graph_and_compute_what_inline_weights_compute(exported, tmp_path):
    """Weights as external data (memory-mapped by ONNX Runtime): every large tensor is outside the graph,
    and the same graph with its weights put back inline gives exactly the same embeddings."""
    import shutil

    import onnx
    from onnx.external_data_helper import uses_external_data

    from soundsift.export.onnx import EXTERNAL_BYTES, GRAPHS

    inline = tmp_path / "inline"
    shutil.copytree(exported, inline)
    outside = 0
    for name in GRAPHS:
        bare = onnx.load(str(exported / name), load_external_data=False)
        big = [t for t in bare.graph.initializer if int(np.prod(t.dims)) * 4 >= EXTERNAL_BYTES]
        assert all(uses_external_data(t) for t in big), name
        if big:
            assert (exported / f"{name}.data").stat().st_size >= sum(int(np.prod(t.dims)) * 4 for t in big)
        outside += len(big)
        (inline / f"{name}.data").unlink(missing_ok=True)
        onnx.save_model(onnx.load(str(exported / name)), str(inline / name))  # loads the data, writes it inline
        assert not any(uses_external_data(t) for t in onnx.load(str(inline / name)).graph.initializer)
    assert outside >= 3  # the tiny model's embedding tables and layers
    waves = [(0.1 * np.random.default_rng(4).standard_normal(n)).astype(np.float32) for n in (3000, 17000)]
    captions = ["a dog barks", "rain on a tin roof, then thunder"]
    a, b = OnnxModel(exported), OnnxModel(inline)
    assert np.array_equal(a.embed_waveforms(waves), b.embed_waveforms(waves))
    assert np.array_equal(a.embed_texts(captions), b.embed_texts(captions))


def test_a_first_request_of_few_captions_opens_the_text_graph_with_one_thread(exported):
    from soundsift.export.runtime import FEW_TEXTS

    captions = [f"sound number {i}, loud" for i in range(FEW_TEXTS + 4)]
    few, many, pinned = OnnxModel(exported), OnnxModel(exported), OnnxModel(exported, threads=2)
    got_few = np.concatenate([few.embed_texts(captions[:1]), few.embed_texts(captions[1:])])
    got_many = many.embed_texts(captions)
    pinned.embed_texts(captions[:1])
    threads = [m._text_session.get_session_options().intra_op_num_threads for m in (few, many, pinned)]
    assert threads == [1, 0, 2]  # 0: ONNX Runtime's default (one per core)
    np.testing.assert_allclose(got_few, got_many, rtol=0, atol=1e-6)


def test_the_audio_graphs_threads_sleep_when_idle_and_embed_the_same(exported, monkeypatch):
    waves = [np.random.default_rng(4).standard_normal(n).astype(np.float32) for n in (1600, 9000)]
    quiet = OnnxModel(exported)
    got = quiet.embed_waveforms(waves)
    options = quiet._audio("core").get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setattr(OnnxModel, "AUDIO_SPINNING", True)
    spinning = OnnxModel(exported)
    np.testing.assert_array_equal(spinning.embed_waveforms(waves), got)
    with pytest.raises(Exception, match="allow_spinning"):  # not set: ONNX Runtime's default (spinning)
        spinning._audio("core").get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


# ----------------------------------------------------------------------------- index build and search


def write_library(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(3)
    root.mkdir()
    for i in range(n):
        t = np.arange(int(16000 * (0.5 + 0.4 * i))) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / f"clip{i:02d}.wav", tone.astype(np.float32), 16000)


def index_model(family: str) -> DualEncoder:
    if family == "crnn":
        return tiny_model(EXPORTABLE["crnn"], seed=3)
    from test_onnx_mn import SNIPPETS, mn_model

    return mn_model(SNIPPETS, seed=3)  # 1-s snippets: the library's clips run alone and as snippets


@pytest.mark.slow
@pytest.mark.parametrize("family", ["crnn", "mn"])
def test_an_onnx_built_index_ranks_like_the_torch_one_and_search_never_imports_torch(family, tmp_path, monkeypatch):
    from soundsift.cli.main import main
    from soundsift.search.api import open_index

    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    model_file = save_model(index_model(family), tmp_path / "model.pt")
    write_library(tmp_path / "lib")
    for runtime in ("torch", "onnx"):
        assert main(["index", "build", str(tmp_path / "lib"), "--out", str(tmp_path / runtime), "--model",
                     str(model_file), "--runtime", runtime, "--no-progress", "--window", "0"]) == 0
    manifest = json.loads(next((tmp_path / "onnx").glob("v*/manifest.json")).read_text())
    assert manifest["model"]["runtime"] == "onnx"
    queries = ["a low hum", "a high beep", "noise"]
    for q in queries:
        by_torch = [h.path for h in open_index(tmp_path / "torch").search(q, k=10, rank="files")]
        by_onnx = open_index(tmp_path / "onnx").search(q, k=10, rank="files")
        assert [h.path for h in by_onnx] == by_torch
    assert isinstance(open_index(tmp_path / "onnx").model, OnnxModel)
    if family != "crnn":
        return
    code = ("import sys; from soundsift.cli.main import main; "
            f"rc = main(['search', {str(tmp_path / 'onnx')!r}, 'a high beep', '-k', '3']); "
            "assert rc == 0; print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); "
            "print(sorted(m for m in ('pydantic', 'yaml', 'soundsift.config', 'numpy.ma') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": SRC, "SOUNDSIFT_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2:] == ["NO-TORCH", "[]"]  # nor the config code train's parsers need


@pytest.mark.slow
def test_the_export_command_and_int8_quantization(tmp_path, capsys):
    from soundsift.cli.main import main

    model = tiny_model(EXPORTABLE["patchformer"], seed=5)
    model_file = save_model(model, tmp_path / "model.pt")
    assert main(["export", "onnx", "--model", str(model_file), str(tmp_path / "f32")]) == 0
    assert "largest difference from torch" in capsys.readouterr().out
    assert main(["export", "onnx", "--model", str(model_file), "--quantize", "int8", str(tmp_path / "i8")]) == 0
    f32, i8 = OnnxModel(tmp_path / "f32"), OnnxModel(tmp_path / "i8")
    assert i8.quantize == "int8" and i8.identity != f32.identity  # other embeddings: another identity
    waves = [np.random.default_rng(2).standard_normal(16000 * 2).astype(np.float32) * 0.1]
    a, b = f32.embed_waveforms(waves), i8.embed_waveforms(waves)
    assert float((a * b).sum()) > 0.9  # close, not equal
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "i8" / "text.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "ConvInteger"}


def test_quantize_needs_the_onnx_runtime_and_an_ensemble_runs_on_torch():
    from soundsift.checkpoints.runtime import load_for_runtime
    from soundsift.errors import ConfigError

    with pytest.raises(ConfigError, match="--quantize needs --runtime onnx"):
        load_for_runtime("zero-shot", "torch", "int8")
    with pytest.raises(ConfigError, match="ensemble runs with --runtime torch"):
        load_for_runtime(["a.pt", "b.pt"], "onnx")
    with pytest.raises(ConfigError, match="--runtime 'tf'"):
        load_for_runtime("zero-shot", "tf")


@pytest.mark.slow
def test_evaluate_scores_the_same_under_onnx_runtime(tmp_path, monkeypatch, capsys):
    from soundsift.cli.main import main

    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    assert main(["-q", "synth", "--preset", "tiny", "--seed", "0", "--out", str(tmp_path / "synth")]) == 0
    model_file = save_model(tiny_model(EXPORTABLE["cnn"], seed=1), tmp_path / "model.pt")
    printed = {}
    for runtime in ("torch", "onnx"):
        capsys.readouterr()
        assert main(["-q", "evaluate", "--model", str(model_file), "--data-root", str(tmp_path / "synth"),
                     "--runtime", runtime]) == 0
        printed[runtime] = capsys.readouterr().out
    assert "mAP@10" in printed["torch"] and printed["onnx"] == printed["torch"]
