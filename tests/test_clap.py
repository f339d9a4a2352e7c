"""The published ``laion-clap`` model: transformers' ClapModel towers as a soundsift DualEncoder.

A tiny random ClapModel (realistic front end: 48 kHz, 64 mel bins, 10-s windows, the published
checkpoint's extractor settings) is saved in the hub layout; soundsift loads it from that folder and,
as ``"laion-clap"``, from a Hugging Face cache in a temp dir (offline), and must reproduce
``ClapModel.get_audio_features`` / ``get_text_features`` computed with transformers' own extractor and
tokenizer. No network anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsift.encoders.clap import DEFAULT_MODEL, tiny_tokenizer

SR = 48000
TOL = 1e-5
# the published laion/clap-htsat-unfused preprocessor_config.json
PUBLISHED_FEATURES = dict(feature_size=64, sampling_rate=SR, hop_length=480, max_length_s=10, fft_window_size=1024,
                          frequency_min=50, frequency_max=14000, padding="repeatpad", truncation="rand_trunc")
TINY_AUDIO = dict(spec_size=256, num_mel_bins=64, window_size=8, patch_size=8, patch_stride=[8, 8], depths=[1, 1],
                  num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_hidden_size=32,
                  enable_fusion=False)
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=80, projection_hidden_size=32)
CAPTIONS = ["the dog barks", "The sound of rain, far away!", "a dog"]


def random_clap(config):
    """A seeded random ``ClapModel`` whose audio batch norm statistics are away from their defaults, so
    a wrong train/eval mode shows."""
    from transformers import ClapModel

    torch.manual_seed(0)
    model = ClapModel(config).eval()
    with torch.no_grad():
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.uniform_(-40, -20)
        norm.running_var.uniform_(50, 150)
    return model


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory) -> Path:
    """A tiny random ClapModel with the published extractor settings, in the hub layout."""
    from transformers import ClapConfig, ClapFeatureExtractor

    folder = tmp_path_factory.mktemp("clap") / "clap-htsat-unfused"
    tokenizer = tiny_tokenizer()
    config = ClapConfig(text_config={**TINY_TEXT, "vocab_size": len(tokenizer)}, audio_config=TINY_AUDIO,
                        projection_dim=24)
    random_clap(config).save_pretrained(folder)
    ClapFeatureExtractor(**PUBLISHED_FEATURES).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(clap_folder):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    return (ClapModel.from_pretrained(clap_folder).eval(), ClapFeatureExtractor.from_pretrained(clap_folder),
            AutoTokenizer.from_pretrained(clap_folder))


@pytest.fixture(scope="module")
def model(clap_folder):
    from soundsift.checkpoints import load_model

    return load_model(clap_folder, device="cpu")


def _waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(int(4.3 * SR)) / SR
    short = (0.4 * np.sin(2 * np.pi * 880 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    long = (0.2 * rng.standard_normal(int(23.7 * SR))).astype(np.float32)  # windows: 10 s, 10 s, 3.7 s
    return [short, long]


def _reference_audio(reference, wave: np.ndarray) -> np.ndarray:
    """get_audio_features (normalised) of each 10-s window of ``wave``, as the processor prepares them; the
    documented long-clip rule: consecutive windows, a tail of 2.5 s or more kept, unit embeddings averaged."""
    clap, features, _ = reference
    window = 10 * SR
    pieces = [wave[s:s + window] for s in range(0, len(wave), window)]
    pieces = [p for i, p in enumerate(pieces) if i == 0 or len(p) >= window // 4]
    with torch.no_grad():
        emb = torch.cat([clap.get_audio_features(**features(p, sampling_rate=SR, return_tensors="pt")).pooler_output
                         for p in pieces])
    return torch.nn.functional.normalize(emb.mean(0), dim=-1).numpy()


def _reference_text(reference, captions: list[str]) -> np.ndarray:
    clap, _, tokenizer = reference
    with torch.no_grad():
        return clap.get_text_features(**tokenizer(captions, padding=True, return_tensors="pt")).pooler_output.numpy()


def test_a_clap_folder_reproduces_clap_model(model, reference):
    from soundsift.model import DualEncoder

    assert isinstance(model, DualEncoder) and model.sample_rate == SR and model.embed_dim == 24
    assert model.identity and model.meta["published"] == "laion-clap"
    waves = _waves()
    audio = model.embed_waveforms(waves, batch_size=2)
    expected = np.stack([_reference_audio(reference, w) for w in waves])
    audio_diff = float(np.abs(audio - expected).max())
    text_diff = float(np.abs(model.embed_texts(CAPTIONS) - _reference_text(reference, CAPTIONS)).max())
    print(f"max abs diff: audio {audio_diff:.2e}, text {text_diff:.2e}")
    assert audio_diff < TOL and text_diff < TOL
    # a clip of at most 10 s is exactly CLAP's embedding; the long one is not its first window's alone
    assert not np.allclose(audio[1], _reference_audio(reference, waves[1][: 10 * SR]), atol=1e-3)
    # deterministic: the same clip embeds the same (CLAP's own rand_trunc would crop at random)
    np.testing.assert_array_equal(model.embed_waveforms(waves[1:]), model.embed_waveforms(waves[1:]))


def test_the_temperature_is_one_over_claps_audio_logit_scale(model, reference):
    scale = float(reference[0].logit_scale_a.detach())
    assert model.tau == pytest.approx(1 / np.exp(scale)) and abs(model.tau - 0.05) > 1e-3


def test_pretrained_false_gives_random_towers_of_the_checkpoints_architecture_offline(clap_folder, monkeypatch):
    import socket

    from soundsift.encoders import build_audio_encoder, build_text_encoder

    def refuse(self, address, *args):
        raise AssertionError(f"network used: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    audio = build_audio_encoder("laion-clap", model=str(clap_folder), pretrained=False)
    text = build_text_encoder("laion-clap", model=str(clap_folder), pretrained=False)
    pretrained = build_text_encoder("laion-clap", model=str(clap_folder))
    assert audio.out_dim == text.out_dim == 24 and not audio.model.frozen_pretrained
    assert not text.backbone.frozen_pretrained and pretrained.backbone.frozen_pretrained
    mine, theirs = text.backbone.state_dict(), pretrained.backbone.state_dict()
    assert mine.keys() == theirs.keys() and not all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_model_file_holds_only_the_projections(model, clap_folder, tmp_path):
    from soundsift.checkpoints import load_model, save_model
    from soundsift.checkpoints.format import read_model_file

    path = tmp_path / "clap.pt"
    save_model(model, path)
    saved = read_model_file(path)["state_dict"]
    assert saved and all(k.startswith(("audio_proj.", "text_proj.")) for k in saved), sorted(saved)[:4]
    again = load_model(path, device="cpu")  # the towers are rebuilt from the folder named in the config
    waves = _waves()[:1]
    np.testing.assert_allclose(again.embed_waveforms(waves), model.embed_waveforms(waves), atol=1e-6)
    np.testing.assert_allclose(again.embed_texts(CAPTIONS), model.embed_texts(CAPTIONS), atol=1e-6)


def _hf_cache(root: Path, folder: Path) -> Path:
    """``folder`` as the Hugging Face cache holds a downloaded snapshot of ``DEFAULT_MODEL`` (blobs named
    by etag, which for LFS files is their sha256; snapshot links; refs/main)."""
    repo = root / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in folder.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / digest).write_bytes(file.read_bytes())
        (repo / "snapshots" / commit / file.name).symlink_to(Path("../../blobs") / digest)
    return root


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_published_name_loads_from_the_hugging_face_cache(model, clap_folder, tmp_path):
    cache = _hf_cache(tmp_path / "hub", clap_folder)
    np.save(tmp_path / "waves.npy", _waves()[0])
    code = f"""
import json, sys, numpy as np
from soundsift.checkpoints import load_model
from soundsift.checkpoints.load import available_offline
from soundsift.cli.main import main
m = load_model("laion-clap", device="cpu")
np.save({str(tmp_path / "audio.npy")!r}, m.embed_waveforms([np.load({str(tmp_path / "waves.npy")!r})]))
np.save({str(tmp_path / "text.npy")!r}, m.embed_texts({CAPTIONS!r}))
print(json.dumps({{"identity": m.identity, "offline": available_offline("laion-clap"),
                   "config": m.config}}))
sys.exit(main(["models"]))
"""
    done = _run(code, {"HF_HUB_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    first, *listing = done.stdout.strip().splitlines()
    info = json.loads(first)
    assert info["offline"] is True
    assert info["config"]["audio_encoder"] == {"name": "laion-clap", "model": DEFAULT_MODEL}
    assert info["identity"] == model.identity  # the same weights: the hub's etags are their sha256
    audio_diff = float(np.abs(np.load(tmp_path / "audio.npy") - model.embed_waveforms(_waves()[:1])).max())
    text_diff = float(np.abs(np.load(tmp_path / "text.npy") - model.embed_texts(CAPTIONS)).max())
    assert audio_diff < TOL and text_diff < TOL, (audio_diff, text_diff)
    text = "\n".join(listing)
    assert "laion-clap: LAION-CLAP" in text and "available offline" in text.split("laion-clap:")[1]


def test_offline_without_a_copy_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.load import available_offline
    from soundsift.cli.main import main
    from soundsift.errors import WeightsUnavailableError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert available_offline("laion-clap") is False
    with pytest.raises(WeightsUnavailableError, match="--model FOLDER"):
        load_model("laion-clap", device="cpu")
    lib = tmp_path / "sounds"
    lib.mkdir()
    import soundfile as sf

    sf.write(lib / "a.wav", _waves()[0][:SR], SR)
    capsys.readouterr()
    assert main(["-q", "index", "build", str(lib), "--out", str(tmp_path / "idx"), "--model", "laion-clap"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "laion-clap" in err and "huggingface-cli download" in err and "--model FOLDER" in err


def test_index_build_and_search_with_a_clap_folder(model, clap_folder, tmp_path, capsys):
    import soundfile as sf

    from soundsift.cli.main import main

    lib = tmp_path / "sounds"
    lib.mkdir()
    waves = _waves()
    sf.write(lib / "tone.wav", waves[0], SR)
    sf.write(lib / "noise.wav", waves[1][: 12 * SR], SR)
    folder = str(clap_folder)
    assert main(["-q", "index", "build", str(lib), "--out", str(tmp_path / "idx"), "--model", folder]) == 0
    capsys.readouterr()
    assert main(["-q", "search", str(tmp_path / "idx"), "a dog", "--json", "--model", folder, "--rank", "files"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["path"] for h in hits} == {"tone.wav", "noise.wav"}
    audio = model.embed_waveforms([waves[0], waves[1][: 12 * SR]])
    expected = dict(zip(["tone.wav", "noise.wav"], (audio @ model.embed_texts(["a dog"]).T)[:, 0]))
    for hit in hits:
        assert abs(hit["score"] - expected[hit["path"]]) < 1e-4, (hit, expected)


def test_tiny_towers_train_and_stay_frozen_when_asked():
    from soundsift.encoders import build_audio_encoder, build_text_encoder
    from soundsift.model import DualEncoder

    frozen = DualEncoder({"name": "laion-clap", "tiny": True}, {"name": "laion-clap", "tiny": True}, embed_dim=24,
                         audio_projection="identity", text_projection="identity")
    assert frozen.sample_rate == 16000
    frozen.train()
    assert not frozen.audio.model.training and not frozen.text.backbone.training
    assert not any(p.requires_grad for p in frozen.audio.model.parameters())
    # tiny towers are random: they are saved (only pretrained frozen towers are rebuilt from their source)
    assert any(k.startswith("audio.model.") for k in frozen.trainable_state_dict())
    audio = build_audio_encoder("laion-clap", tiny=True, freeze=False, trainable=0)
    text = build_text_encoder("laion-clap", tiny=True, freeze=False)
    audio.train()
    text.train()
    wav = torch.randn(2, 40000) * 0.1
    out = audio(wav, torch.tensor([40000, 9000]))
    assert out.shape == (2, 24)
    (out.sum() + text(["the dog", "a sound"]).sum()).backward()
    assert audio.model.audio_projection.linear1.weight.grad is not None
    assert all(p.grad is None for p in audio.model.audio_model.audio_encoder.layers.parameters())
    assert text.backbone.text_projection.linear1.weight.grad is not None


def test_models_lists_laion_clap(capsys):
    from soundsift.cli.main import main

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["laion-clap"]
    assert "153 M" in row["size"] and "LAION-Audio-630K" in row["trained_on"]
    assert isinstance(row["available_offline"], bool) and DEFAULT_MODEL in row["source"]
