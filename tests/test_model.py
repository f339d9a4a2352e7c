import numpy as np
import pytest
import torch
from torch import nn

from soundsift.checkpoints import load_model, read_model_file, save_model
from soundsift.encoders import AudioEncoder, TextEncoder, register_audio_encoder, register_text_encoder
from soundsift.errors import ModelFileError
from soundsift.model import DualEncoder


class StatsAudio(AudioEncoder):
    """Tiny audio encoder for tests: framewise energy statistics through a linear layer."""

    sample_rate = 16000
    out_dim = 8

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, self.out_dim)

    def forward(self, waveform, lengths=None):
        frames = waveform.unfold(1, 400, 400)
        feats = torch.stack(
            [frames.abs().mean((1, 2)), frames.std((1, 2)), frames.amax((1, 2)), waveform.shape[1] / 16000 * torch.ones(len(waveform))], 1
        )
        return self.lin(feats)


class FrozenText(TextEncoder):
    """A 'pretrained' frozen text tower: deterministic from its seed, so it need not be saved."""

    out_dim = 6
    frozen_pretrained = True

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = nn.Parameter(torch.randn(256, self.out_dim, generator=g), requires_grad=False)

    def forward(self, texts):
        return torch.stack([self.table[[ord(c) % 256 for c in t]].mean(0) for t in texts])


register_audio_encoder("test-stats", StatsAudio)
register_text_encoder("test-frozen", FrozenText)


def tiny():
    torch.manual_seed(0)
    return DualEncoder("test-stats", "test-frozen", embed_dim=5, text_projection="mlp")


def test_embeddings_are_unit_vectors_and_similarity_layout():
    m = tiny()
    wav = torch.randn(3, 1600)
    sim = m(wav, None, ["a dog", "rain", "a bell", "wind"])
    assert sim.shape == (3, 4)  # (n_audio, n_caption)
    assert torch.allclose(m.encode_audio(wav).norm(dim=1), torch.ones(3))
    assert sim.abs().max() <= 1 + 1e-6


def test_save_load_round_trip_skips_frozen_pretrained(tmp_path):
    m = tiny()
    path = save_model(m, tmp_path / "m.pt", meta={"note": "x"})
    payload = read_model_file(path)
    assert not any(k.startswith("text.") for k in payload["state_dict"])
    assert any(k.startswith("audio.") for k in payload["state_dict"])
    loaded = load_model(path)
    assert not loaded.training
    assert len(loaded.identity) == 64 and loaded.meta == {"note": "x"}
    wav = [np.random.default_rng(0).standard_normal(1600).astype(np.float32)]
    assert np.allclose(loaded.embed_waveforms(wav), m.embed_waveforms(wav), atol=1e-6)
    assert np.allclose(loaded.embed_texts(["a dog"]), m.embed_texts(["a dog"]), atol=1e-6)


def test_embedding_does_not_depend_on_batch_neighbours():
    m = tiny()
    rng = np.random.default_rng(1)
    a = rng.standard_normal(1600).astype(np.float32)
    others = [rng.standard_normal(n).astype(np.float32) for n in (800, 3200, 1600)]
    alone = m.embed_waveforms([a])
    mixed = m.embed_waveforms([*others, a], batch_size=4)
    # equal up to float rounding (batch size may change the BLAS kernel), never padded with neighbours
    assert np.allclose(alone[0], mixed[3], atol=1e-6)
    assert np.array_equal(mixed, m.embed_waveforms([*others, a], batch_size=4))  # bit-exact repeat


def test_bad_model_files_are_refused_clearly(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="junk.pt"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not a soundsift model"):
        load_model(other)
    path = save_model(tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 999
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="version 999"):
        load_model(tmp_path / "future.pt")
    payload["version"] = 1
    payload["state_dict"]["audio.lin.weight"] = torch.zeros(3, 3)
    torch.save(payload, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match="shape mismatch"):
        load_model(tmp_path / "shape.pt")
