"""PaSST encoder and the Kaldi log-mel front end (shared with MN), against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.frontends.kaldi import KaldiLogMel, kaldi_mel_banks
from soundsift.encoders.layers import split_snippets
from soundsift.encoders.passt import PaSSTEncoder

SR = 32000


# --------------------------------------------------------------------------- numpy reference front end


def ref_kaldi_banks(n_mels, n_fft, sr, fmin, fmax):
    """Kaldi mel banks, written out in numpy: triangles linear in 1127 ln(1 + f/700)."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    fft_mel = mel(np.arange(n_fft // 2) * sr / n_fft)
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, v in enumerate(fft_mel):
            if lo < v <= c:
                out[m, k] = (v - lo) / (c - lo)
            elif c < v < hi:
                out[m, k] = (hi - v) / (hi - c)
    return out


def ref_logmel(x, n_mels=128, sr=SR, win=800, hop=320, n_fft=1024, fmin=0.0, fmax=15000.0):
    """AugmentMelSTFT (eval mode) in numpy: pre-emphasis, centred reflect STFT, Kaldi banks, log, scale."""
    x = np.asarray(x, dtype=np.float64)
    y = x[1:] - 0.97 * x[:-1]
    y = np.pad(y, n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    n = np.arange(win)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / (win - 1))
    frames = 1 + (len(y) - n_fft) // hop
    spec = np.stack([np.fft.rfft(y[i * hop : i * hop + n_fft] * window) for i in range(frames)], axis=1)
    power = np.abs(spec) ** 2
    mel = ref_kaldi_banks(n_mels, n_fft, sr, fmin, fmax) @ power
    return (np.log(mel + 1e-5) + 4.5) / 5.0


def test_kaldi_banks_match_reference():
    ours = kaldi_mel_banks(128, 1024, SR, 0.0, 15000.0).numpy()
    assert ours.shape == (128, 513) and np.all(ours[:, -1] == 0)
    np.testing.assert_allclose(ours, ref_kaldi_banks(128, 1024, SR, 0.0, 15000.0), atol=1e-6)
    assert np.allclose(
        kaldi_mel_banks(40, 512, 16000, 20.0, 7600.0), ref_kaldi_banks(40, 512, 16000, 20, 7600)
    )


def test_logmel_matches_reference_and_paper_geometry():
    front = KaldiLogMel().eval()
    assert front.fmax == 15000.0  # sr/2 - fmax_aug_range/2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8000)).astype(np.float32) * 0.1
    out = front(torch.from_numpy(x))
    assert out.shape == (2, 128, 1 + 7999 // 320)
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), ref_logmel(x[i]), atol=2e-4)
    assert front(torch.zeros(1, 10 * SR)).shape[-1] == 1000  # 10 s -> 1000 frames -> 62 patches of 16


def test_logmel_train_jitter_and_eval_determinism():
    front = KaldiLogMel(freqm=20, timem=20)
    x = torch.randn(2, SR) * 0.1
    front.eval()
    assert torch.equal(front(x), front(x))
    front.train()
    torch.manual_seed(1)
    a = front(x)
    assert not torch.allclose(a, front(x))
    assert front(torch.randn(1, 100)).shape == (1, 128, 2)  # very short input: zero-padded to stft size


# --------------------------------------------------------------------------- snippets


def test_split_snippets_counts_and_padding():
    wav = torch.arange(1, 26, dtype=torch.float32).repeat(3, 1)  # 25 samples, segment 10
    snippets, owner, valid = split_snippets(wav, torch.tensor([25, 10, 3]), segment=10)
    assert owner.tolist() == [0, 0, 0, 1, 2] and valid.tolist() == [10, 10, 5, 10, 3]
    assert snippets[2].tolist() == [21, 22, 23, 24, 25, 0, 0, 0, 0, 0]
    assert snippets[4].tolist() == [1, 2, 3] + [0] * 7  # samples past the length are zeroed
    _, owner, _ = split_snippets(wav, torch.tensor([25, 21, 3]), segment=10, min_remainder=6)
    assert owner.tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="lengths"):
        split_snippets(wav, torch.tensor([26, 1, 1]), segment=10)


# --------------------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def tiny() -> PaSSTEncoder:
    torch.manual_seed(0)
    return build_audio_encoder("passt", size="tiny").eval()


def test_lengths_make_batching_irrelevant_and_eval_deterministic(tiny):
    x = torch.randn(2, 25 * SR) * 0.1
    x[1, 15 * SR :] = 1.0  # garbage in the padding must not matter
    with torch.no_grad():
        batch = tiny(x, torch.tensor([25 * SR, 15 * SR]))
        alone = tiny(x[1:, : 15 * SR])
        assert torch.equal(batch, tiny(x, torch.tensor([25 * SR, 15 * SR])))
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)


def test_structured_patchout_only_in_training(tiny):
    seen = []
    hook = tiny.model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    x = torch.randn(1, 10 * SR) * 0.1
    try:
        with torch.no_grad():
            tiny(x)
            tiny.train()
            tiny(x)
    finally:
        tiny.eval()
        hook.remove()
    assert seen == [2 + 8 * 62, 2 + (8 - 2) * (62 - 15)]


def test_gradients_flow_in_training():
    torch.manual_seed(0)
    enc = PaSSTEncoder(size="tiny").train()
    enc(torch.randn(2, 3 * SR)).pow(2).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def official_layout(embed=768, depth=12, grid=(8, 62), patch=16, classes=527) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the released PaSST state dicts (kkoutini/PaSST ``PaSST`` module)."""
    d = embed
    keys = {
        "cls_token": (1, 1, d),
        "dist_token": (1, 1, d),
        "new_pos_embed": (1, 2, d),
        "freq_new_pos_embed": (1, d, grid[0], 1),
        "time_new_pos_embed": (1, d, 1, grid[1]),
        "patch_embed.proj.weight": (d, 1, patch, patch),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
        "head.0.weight": (d,),
        "head.0.bias": (d,),
        "head.1.weight": (classes, d),
        "head.1.bias": (classes,),
        "head_dist.weight": (classes, d),
        "head_dist.bias": (classes,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,)})
        keys.update(
            {b + "norm2.bias": (d,), b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,)}
        )
        keys.update({b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,)})
        keys.update({b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,)})
        keys.update({b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)})
    return keys


@pytest.mark.parametrize(
    ("variant", "depth", "grid"),
    [("passt_s_p16_s16_128_ap468", 12, (8, 62)), ("passt_s_kd_p16_128_ap486", 12, (12, 99))],
)
def test_full_size_layout_matches_official_checkpoint(variant, depth, grid):
    from soundsift.encoders.pretrained import load_state_dict_checked

    with torch.device("meta"):
        enc = PaSSTEncoder(variant, pretrained=False)
        ckpt = {k: torch.empty(s) for k, s in official_layout(depth=depth, grid=grid).items()}
    report = load_state_dict_checked(enc.model, ckpt, ignore_unexpected=("head.*", "head_dist.*"))
    assert report.ok and not report.missing and len(report.ignored_unexpected) == 6
    assert enc.out_dim == 768 and report.loaded == len(ckpt) - 6


def test_checkpoint_file_loads_with_heads_skipped(tmp_path):
    torch.manual_seed(0)
    sd = {k: torch.randn(s) for k, s in official_layout(embed=32, depth=2).items()}
    torch.save(sd, tmp_path / "passt.pt")
    enc = PaSSTEncoder(size="tiny", checkpoint=tmp_path / "passt.pt")
    assert torch.equal(enc.model.time_new_pos_embed, sd["time_new_pos_embed"])
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        PaSSTEncoder(size="tiny", checkpoint=tmp_path / "broken.pt")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown PaSST variant"):
        PaSSTEncoder("passt_xl", pretrained=False)
    with pytest.raises(ValueError, match="no published weights"):
        PaSSTEncoder(size="tiny", pretrained=True)
    with pytest.raises(ValueError, match="positional"):
        PaSSTEncoder(size="tiny", segment_seconds=12.0)
