"""Run the OFFICIAL ATST-Frame code (Audio-WestlakeU/audiossl) and write tests/fixtures/atst_upstream.safetensors.

Run through ``scripts/upstream_fixtures/atst.sh`` (it provides the environment): the official package
must be importable from ``$AUDIOSSL_SRC`` and torchaudio must be installed. Nothing of the official
code is copied here; this script imports it and records what it computes.

What is recorded (all float32 unless noted):
  * ``state_dict/<key>``: the official ``FrameAST`` state dict (reduced size, seeded random weights),
    with the key prefix of the released ATST-Frame Lightning checkpoints (``encoder.encoder.``),
    so that soundsift's ``convert_atst_checkpoint`` is exercised when the test loads it.
  * ``wave``: ``(B, T)`` deterministic 16-kHz waveforms, zero past ``lengths`` (int64, ``(B,)``).
  * ``mel_clip_<i>``: the official front end applied to clip ``i`` alone, unpadded ``(64, frames)``.
  * ``snippets``: the zero-padded snippets as salsa cuts them (``unfold`` of the padded clip), clip-major;
    ``snippet_owner`` / ``snippet_valid`` (int64): owning clip, real samples in each snippet.
  * ``mel_snippets`` ``(N, 64, frames)``, ``tokens`` ``(N, W, D)``: official front end and the last
    block's normalised frame tokens (``get_intermediate_layers(n=1, scene=False)``) of each snippet.
  * ``snippet_counts`` (int64) / ``snippet_means`` ``(N, D)``: tokens covering real audio in each snippet
    (salsa's ``audio_features_mask``) and their mean.
  * ``clip_embeddings`` ``(B, D)``: salsa's clip average (mean of every real-audio token of the clip).
  * ``unfold_*``: the same for salsa's un-padded path (``split_audio`` on the raw clip: the trailing
    partial snippet dropped), for the clips at least one snippet long.

The front end (``MelSpectrogram`` -> ``AmplitudeToDB(top_db=80)`` -> clamp(-50, 80) -> ``MinMax``, as
ATST-SED's ``ATSTTransform``/``ATSTNorm`` and salsa's ``ATSTMel``) is applied to ONE snippet (or one clip)
at a time: torchaudio's ``AmplitudeToDB`` on a 3-D batch takes its top_db floor from the maximum of the
whole batch, whereas soundsift (and audiossl's per-clip transforms) take it per snippet / per clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchaudio
from safetensors.torch import save_file
from torch import nn

SR = 16000
SEGMENT_SECONDS = 1.0  # reduced snippet length (the paper uses 10 s)
LENGTHS = [9000, 16000, 40000, 33000]  # < one snippet, exactly one, > two (partial 0.5 s), > two (partial 1000 samples)
CONFIG = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # soundsift's TINY
SALSA_FAKE_LENGTH = 1001  # salsa passes length=1001 frames for every snippet (no attention masking)
CKPT_PREFIX = "encoder.encoder."  # ATST-Frame Lightning checkpoint layout, as salsa / ATST-SED map it
SEED = 0


def load_official(src: Path) -> types.ModuleType:
    """Import ``audiossl/methods/atstframe/audio_transformer.py`` from the checkout ``src``.

    Its module-level ``from audiossl.methods.atstframe import random_mask`` pulls in fairseq (used only
    for masked pretraining, never on the inference path used here), so that one module is replaced by
    an empty stand-in; everything else (``audiossl.modules.transformer.Block``, einops) is the real thing.
    """
    sys.path.insert(0, str(src))
    stub = types.ModuleType("audiossl.methods.atstframe.random_mask")
    stub.__doc__ = "stand-in: fairseq-based masking for pretraining, not used for inference"
    sys.modules["audiossl.methods.atstframe.random_mask"] = stub
    path = src / "audiossl" / "methods" / "atstframe" / "audio_transformer.py"
    spec = importlib.util.spec_from_file_location("audiossl.methods.atstframe.audio_transformer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class OfficialFrontEnd:
    """ATST-SED ``ATSTTransform`` + ``ATSTNorm`` (= salsa ``ATSTMel`` without training-time warping)."""

    def __init__(self) -> None:
        self.mel = torchaudio.transforms.MelSpectrogram(
            SR, f_min=60, f_max=7800, hop_length=160, win_length=1024, n_fft=1024, n_mels=64
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80)
        self.min, self.max = -79.6482, 50.6842

    def __call__(self, wave_1d: torch.Tensor) -> torch.Tensor:
        assert wave_1d.dim() == 1, "one clip at a time, so that top_db is taken per clip"
        db = self.to_db(self.mel(wave_1d)).clamp(min=-50, max=80)
        return (db - self.min) / (self.max - self.min) * 2.0 - 1.0


def make_waves(lengths: list[int], seed: int) -> torch.Tensor:
    """Deterministic test signals: chirp + harmonics + noise with an envelope; clip 1 is quiet
    (exercises the top_db floor and the -50 dB clamp)."""
    rng = np.random.default_rng(seed)
    t_max = max(lengths)
    out = np.zeros((len(lengths), t_max), dtype=np.float64)
    gains = [0.3, 3e-3, 0.8, 0.1]
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        f0 = 150.0 + 90.0 * i
        x = 0.5 * np.sin(2 * np.pi * (f0 * t + 400.0 * t**2))
        x += 0.3 * np.sin(2 * np.pi * 3.1 * f0 * t + i)
        x += 0.2 * rng.standard_normal(n)
        x *= 0.6 + 0.4 * np.sin(2 * np.pi * (0.7 + 0.3 * i) * t) ** 2
        out[i, :n] = gains[i % len(gains)] * x
    return torch.from_numpy(out.astype(np.float32))


def build_model(mod: types.ModuleType) -> nn.Module:
    """Official ``FrameAST`` built as ``FrameAST_base`` does, at soundsift's reduced size; the seeded
    random weights are perturbed so that LayerNorm affines and biases are not trivially 1 / 0."""
    torch.manual_seed(SEED)
    model = mod.FrameAST(
        patch_h=64, patch_w=4, qkv_bias=False, norm_layer=partial(nn.LayerNorm, eps=1e-6), **CONFIG
    )
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if ("norm" in name or name.endswith("bias")) else 0.02
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


@torch.no_grad()
def snippet_tokens(model: nn.Module, front: OfficialFrontEnd, snippet: torch.Tensor):
    mel = front(snippet)  # (64, frames)
    length = torch.tensor([SALSA_FAKE_LENGTH])
    tokens = model.get_intermediate_layers(mel[None, None], length, n=1, scene=False)[0]  # (W, D)
    return mel, tokens


@torch.no_grad()
def salsa_padded(model, front, wave, n, segment):
    """salsa with a fixed-length dataset: the clip zero-padded (here to whole snippets), unfolded into
    snippets, every token computed, then the mask ``ceil(audio_length * tokens)`` keeps the tokens that
    cover real audio; the clip embedding is their mean."""
    fixed = math.ceil(n / segment) * segment
    x = torch.zeros(fixed)
    x[:n] = wave[:n]
    snippets = x.unfold(0, segment, segment)
    mels, toks = zip(*(snippet_tokens(model, front, s) for s in snippets))
    tokens = torch.stack(toks)  # (S, W, D)
    s, w, _ = tokens.shape
    n_real = math.ceil(min(n, fixed) / fixed * (s * w))  # salsa: m[:ceil(audio_length * f.shape[0])] = 1
    flat = tokens.reshape(s * w, -1)
    clip = flat[:n_real].mean(0)
    counts = [max(0, min(w, n_real - j * w)) for j in range(s)]
    means = torch.stack([tokens[j, : counts[j]].mean(0) for j in range(s)])
    valid = [min(segment, n - j * segment) for j in range(s)]
    return snippets, torch.stack(mels), tokens, counts, means, clip, valid


@torch.no_grad()
def salsa_unfold(model, front, wave, n, segment):
    """salsa's ``split_audio`` on the raw clip: ``unfold`` drops the trailing partial snippet; the
    concatenated tokens are averaged (all of them: every snippet is full)."""
    snippets = wave[:n].unfold(0, segment, segment)
    toks = torch.stack([snippet_tokens(model, front, s)[1] for s in snippets])
    return toks.mean(1), toks.reshape(-1, toks.shape[-1]).mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audiossl", type=Path, default=os.environ.get("AUDIOSSL_SRC"))
    ap.add_argument("--commit", default=os.environ.get("AUDIOSSL_COMMIT", "unknown"))
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/atst_upstream.safetensors"))
    args = ap.parse_args()
    if args.audiossl is None:
        ap.error("pass --audiossl or set AUDIOSSL_SRC")
    torch.set_num_threads(1)
    mod = load_official(args.audiossl)
    model = build_model(mod)
    front = OfficialFrontEnd()
    segment = int(SEGMENT_SECONDS * SR)
    waves = make_waves(LENGTHS, SEED)

    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        out[f"state_dict/{CKPT_PREFIX}{key}"] = value.detach().clone().contiguous()
    out["wave"] = waves
    out["lengths"] = torch.tensor(LENGTHS, dtype=torch.int64)
    cols = {k: [] for k in ("snippets", "mel_snippets", "tokens", "snippet_means")}
    owner, counts_all, valid_all, clips = [], [], [], []
    unfold_clips, unfold_index, unfold_means, unfold_owner = [], [], [], []
    for i, n in enumerate(LENGTHS):
        out[f"mel_clip_{i}"] = front(waves[i, :n]).contiguous()
        snippets, mels, tokens, counts, means, clip, valid = salsa_padded(model, front, waves[i], n, segment)
        cols["snippets"].append(snippets)
        cols["mel_snippets"].append(mels)
        cols["tokens"].append(tokens)
        cols["snippet_means"].append(means)
        owner += [i] * len(snippets)
        counts_all += counts
        valid_all += valid
        clips.append(clip)
        if n >= segment:
            m, c = salsa_unfold(model, front, waves[i], n, segment)
            unfold_index.append(i)
            unfold_clips.append(c)
            unfold_means.append(m)
            unfold_owner += [i] * len(m)
    for k, v in cols.items():
        out[k] = torch.cat(v).contiguous()
    out["snippet_owner"] = torch.tensor(owner, dtype=torch.int64)
    out["snippet_counts"] = torch.tensor(counts_all, dtype=torch.int64)
    out["snippet_valid"] = torch.tensor(valid_all, dtype=torch.int64)
    out["clip_embeddings"] = torch.stack(clips)
    out["unfold_clip_index"] = torch.tensor(unfold_index, dtype=torch.int64)
    out["unfold_clip_embeddings"] = torch.stack(unfold_clips)
    out["unfold_snippet_means"] = torch.cat(unfold_means).contiguous()
    out["unfold_snippet_owner"] = torch.tensor(unfold_owner, dtype=torch.int64)

    meta = {
        "upstream": "https://github.com/Audio-WestlakeU/audiossl",
        "upstream_commit": args.commit,
        "upstream_module": "audiossl/methods/atstframe/audio_transformer.py (FrameAST, get_intermediate_layers)",
        "front_end": "torchaudio MelSpectrogram(16000, f_min=60, f_max=7800, hop_length=160, win_length=1024, "
        "n_fft=1024, n_mels=64) -> AmplitudeToDB('power', top_db=80) -> clamp(-50, 80) -> "
        "MinMax(-79.6482, 50.6842) (ATST-SED ATSTTransform + ATSTNorm; salsa ATSTMel); applied to one "
        "snippet / one clip at a time so that the top_db floor is per snippet (per clip), as in soundsift",
        "model": "FrameAST(patch_h=64, patch_w=4, qkv_bias=False, norm_layer=LayerNorm(eps=1e-6), "
        f"spec_w=1001, pos_type='cut', **{CONFIG}) (FrameAST_base at reduced size), eval mode; "
        f"torch.manual_seed({SEED}) init plus seeded noise on every parameter",
        "checkpoint_layout": f"state_dict/ keys = official FrameAST keys prefixed '{CKPT_PREFIX}' "
        "(ATST-Frame Lightning checkpoint, as salsa models/audio/atst.py load_atst maps it)",
        "segment_seconds": SEGMENT_SECONDS,
        "lengths": LENGTHS,
        "tokens": "get_intermediate_layers(mel[None, None], length=tensor([1001]), n=1, scene=False) per "
        "snippet, as salsa ATSTWrapper (fake_length 1001: no attention masking)",
        "average": "salsa padded path (fixed-length dataset, WindowedPrediction/split_audio unfold, "
        "ex_dcase24 audio_features_mask): clip zero-padded to whole snippets, tokens of all snippets "
        "concatenated, the first ceil(length / padded_length * n_tokens) kept, mean over them = "
        "clip_embeddings; snippet_means/snippet_counts are the same mask restricted to each snippet. "
        "unfold_*: salsa on the raw clip (trailing partial snippet dropped by unfold), clips >= 1 snippet only",
        "versions": {
            "torch": torch.__version__,
            "torchaudio": torchaudio.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata={"meta": json.dumps(meta)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
