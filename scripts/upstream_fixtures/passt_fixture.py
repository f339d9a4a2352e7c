"""Write tests/fixtures/passt_upstream.safetensors by running the OFFICIAL PaSST code (hear21passt).

Run through ``scripts/upstream_fixtures/passt.sh`` (it needs the throw-away venv of ``env.sh`` plus
hear21passt on PYTHONPATH). soundsift never imports hear21passt; ``tests/test_upstream_passt.py``
compares soundsift's re-implementation against the numbers stored here.

What is stored (all float32 unless said otherwise):

- ``waveform.{i}``: three deterministic 32-kHz test clips, shorter than one snippet, exactly one
  snippet, and longer than two snippets (snippet length reduced to ``SNIPPET_S`` = 1 s);
- ``logmel.{i}``: the official front end (``hear21passt.models.preprocess.AugmentMelSTFT`` with the
  arguments of ``hear21passt.base.get_basic_model`` and salsa's ``models/audio/passt.py``), eval mode, of
  each whole clip: ``(128, frames)``;
- for each of two reduced models (``s16``: patch 16 / stride 16 as ``passt_s_p16_s16_128_ap468``;
  ``s10``: patch 16 / stride 10 as ``passt_s_kd_p16_128_ap486``), built from the official
  ``hear21passt.models.passt.PaSST`` class with embed_dim 32, depth 2, 2 heads and seeded random weights:
  - ``{v}.state.<official key>``: the official state dict (including the AudioSet-layout heads);
  - ``{v}.pipeline.snippet_emb`` ``(B, S, D)``, ``{v}.pipeline.mask`` ``(B, S)``,
    ``{v}.pipeline.clip_emb`` ``(B, D)``: salsa's training/evaluation path (see META "pipeline");
  - ``{v}.split.snippet_emb.{i}`` ``(S_i, D)``, ``{v}.split.clip_emb`` ``(B, D)``: salsa's
    ``split_audio`` applied to each clip on its own (see META "split").

The embedding of a snippet is the second output of the official ``PaSST.forward``: ``features =
(norm(x)[:, 0] + norm(x)[:, 1]) / 2``, the mean of the final-norm CLS and distillation tokens (what salsa's
``Wrapper`` takes as ``[-2]`` of its vendored copy, whose forward returns one extra output).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from hear21passt.models.passt import PaSST
from hear21passt.models.preprocess import AugmentMelSTFT
from safetensors.torch import save_file

SR = 32000
SNIPPET_S = 1.0  # reduced from the paper's 10 s so that the inputs stay small
FIXED_SNIPPETS = 3  # salsa pads/crops Clotho to 30 s = 3 snippets of 10 s; here 3 snippets of 1 s
LENGTHS = (17600, 32000, 76800)  # 0.55 s (< 1 snippet), 1.0 s (= 1 snippet), 2.4 s (> 2 snippets)
REDUCED = {"embed_dim": 32, "depth": 2, "num_heads": 2}  # soundsift's PaSST TINY
IMG_SIZE = (128, 998)  # soundsift PaSSTConfig n_mels / input_tdim
VARIANTS = {"s16": 16, "s10": 10}  # name -> patch stride (f and t)
FRONT_END = dict(
    n_mels=128,
    sr=SR,
    win_length=800,
    hopsize=320,
    n_fft=1024,
    freqm=48,
    timem=192,
    htk=False,
    fmin=0.0,
    fmax=None,
    norm=1,
    fmin_aug_range=10,
    fmax_aug_range=2000,
)


def make_waveforms() -> list[torch.Tensor]:
    """Deterministic test clips: a chirp, two tones, amplitude modulation, noise, a silent stretch."""
    rng = np.random.default_rng(20240611)
    out = []
    for i, n in enumerate(LENGTHS):
        t = np.arange(n) / SR
        f0, f1 = 150.0 * (i + 1), 9000.0
        chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        tones = 0.3 * np.sin(2 * np.pi * 440.0 * (i + 1) * t) + 0.2 * np.sin(2 * np.pi * 3100.0 * t + i)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t + i)
        x = 0.4 * env * chirp + tones + 0.05 * rng.standard_normal(n)
        x[int(0.3 * n) : int(0.3 * n) + 1500] = 0.0  # exact silence: the log floor
        out.append(torch.from_numpy((0.5 * x).astype(np.float32)))
    return out


def build_model(stride: int, seed: int) -> PaSST:
    """The official PaSST at reduced size, with every parameter (also biases and norms) randomised."""
    torch.manual_seed(seed)
    net = PaSST(
        img_size=IMG_SIZE,
        patch_size=16,
        stride=stride,
        in_chans=1,
        num_classes=527,
        distilled=True,
        qkv_bias=True,
        mlp_ratio=4.0,
        **REDUCED,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("pos_embed") or name in ("cls_token", "dist_token"):
                p.copy_(0.5 * noise)  # large enough that a misplaced positional encoding shows
            elif p.dim() == 1 and ("norm" in name or name.startswith("head.0")):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.05 * noise)  # biases
            else:
                p.add_(0.02 * noise)
    return net.eval()


@torch.no_grad()
def features(net: PaSST, mel_fn: AugmentMelSTFT, snippets: torch.Tensor) -> torch.Tensor:
    """Official embedding of each ``(N, samples)`` snippet: PaSST.forward's ``features`` output."""
    _, feats = net(mel_fn(snippets).unsqueeze(1))
    return feats


def salsa_pipeline(net, mel_fn, waves, seg):
    """salsa's path for training and evaluation (experiments/ex_dcase24.py + data/datasets/
    dataset_base_classes.py FixedLengthAudio + models/audio/base.py WindowedPrediction):
    zero-pad every clip at the end to a fixed length (crop if longer; none is here), audio_length =
    min(len, fixed) / fixed, unfold into non-overlapping snippets, embed each, then average the snippets
    ``m[:ceil(audio_length * S)] = 1`` of each clip (a trailing partial snippet counts, zero-padded)."""
    fixed = FIXED_SNIPPETS * seg
    batch = torch.zeros(len(waves), fixed)
    lengths = []
    for i, w in enumerate(waves):
        batch[i, : min(len(w), fixed)] = w[:fixed]
        lengths.append(min(len(w), fixed) / fixed)
    audio_length = torch.tensor(lengths, dtype=torch.float64)  # default_collate makes float64
    snippets = batch.unfold(1, seg, seg).reshape(-1, seg)
    emb = features(net, mel_fn, snippets).reshape(len(waves), -1, REDUCED["embed_dim"])
    mask = torch.zeros(emb.shape[:2])
    for i in range(len(waves)):
        mask[i, : math.ceil(audio_length[i].item() * emb.shape[1])] = 1
    clip = (emb * mask[:, :, None]).sum(1) / mask[:, :, None].sum(1)
    return emb, mask, clip


def salsa_split(net, mel_fn, wave, seg):
    """salsa's ``split_audio`` on one clip: shorter than a snippet -> passed whole (unpadded); else
    ``unfold(1, seg, seg)``, which drops a trailing partial snippet; then the snippet mean."""
    x = wave[None]
    if x.shape[1] >= seg:
        x = x.unfold(1, seg, seg).reshape(-1, seg)
    emb = features(net, mel_fn, x)
    return emb, emb.mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "tests/fixtures/passt_upstream.safetensors",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    seg = int(SNIPPET_S * SR)
    mel_fn = AugmentMelSTFT(**FRONT_END).eval()
    waves = make_waveforms()
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i, w in enumerate(waves):
            tensors[f"waveform.{i}"] = w
            tensors[f"logmel.{i}"] = mel_fn(w[None])[0]
    eps = {}
    for k, (name, stride) in enumerate(VARIANTS.items()):
        net = build_model(stride, seed=1000 + k)
        eps[name] = {n: m.eps for n, m in net.named_modules() if isinstance(m, torch.nn.LayerNorm)}
        for key, value in net.state_dict().items():
            tensors[f"{name}.state.{key}"] = value
        emb, mask, clip = salsa_pipeline(net, mel_fn, waves, seg)
        tensors[f"{name}.pipeline.snippet_emb"], tensors[f"{name}.pipeline.mask"] = emb, mask
        tensors[f"{name}.pipeline.clip_emb"] = clip
        clips = []
        for i, w in enumerate(waves):
            s_emb, c_emb = salsa_split(net, mel_fn, w, seg)
            tensors[f"{name}.split.snippet_emb.{i}"] = s_emb
            clips.append(c_emb)
        tensors[f"{name}.split.clip_emb"] = torch.stack(clips)
    meta = {
        "generator": "scripts/upstream_fixtures/passt_fixture.py (run by scripts/upstream_fixtures/passt.sh)",
        "official_classes": [
            "hear21passt.models.passt.PaSST",
            "hear21passt.models.preprocess.AugmentMelSTFT",
        ],
        "sample_rate": SR,
        "snippet_seconds": SNIPPET_S,
        "lengths_samples": list(LENGTHS),
        "front_end": {k: v for k, v in FRONT_END.items()},
        "front_end_mode": "eval (no fmin/fmax jitter, no masking); fmax=None -> sr//2 - fmax_aug_range//2 = 15000",
        "model": {
            "img_size": list(IMG_SIZE),
            "patch_size": 16,
            "in_chans": 1,
            "num_classes": 527,
            "distilled": True,
            "qkv_bias": True,
            "mlp_ratio": 4.0,
            **REDUCED,
        },
        "variants": {
            name: {
                "stride": s,
                "seed": 1000 + k,
                "soundsift_variant": "passt_s_p16_s16_128_ap468" if s == 16 else "passt_s_kd_p16_128_ap486",
            }
            for k, (name, s) in enumerate(VARIANTS.items())
        },
        "weights": "official init (torch.manual_seed(seed)), then every parameter re-drawn/perturbed with "
        "torch.Generator seed+1: positional encodings and tokens 0.5*N(0,1), norm weights 1+0.2*N, "
        "norm biases 0.2*N, other biases 0.05*N, matrices += 0.02*N",
        "layernorm_eps": eps,
        "mel_banks": "torchaudio.compliance.kaldi.get_mel_banks (computed in float32), padded with a zero Nyquist column",
        "embedding": "second output of official PaSST.forward: (norm(x)[:,0] + norm(x)[:,1]) / 2 "
        "(final-norm CLS and distillation tokens), model in eval mode",
        "pipeline": f"salsa train/eval path: each clip zero-padded at the end to {FIXED_SNIPPETS} snippets "
        f"({FIXED_SNIPPETS * SNIPPET_S} s, the analogue of salsa's 30 s fixed length for 10-s snippets), "
        "audio_length=min(len,fixed)/fixed (float64), batch.unfold(1, seg, seg), one PaSST pass per "
        "snippet, mask[i, :ceil(audio_length[i]*S)] = 1, clip = masked mean over snippets. A trailing "
        "partial snippet is included (zero-padded); all-padding snippets are excluded. "
        "soundsift equivalent: forward(padded batch, lengths) with min_remainder_seconds=0.",
        "split": "salsa models/audio/base.py split_audio on each clip alone: len < seg -> the whole unpadded "
        "clip is one snippet; else x.unfold(1, seg, seg) (drops the trailing partial snippet); "
        "clip = plain mean of its snippet embeddings. soundsift equivalent for len >= seg: "
        "min_remainder_seconds=snippet_seconds; for len < seg soundsift zero-pads to one snippet, so "
        "only embed_snippets(unpadded clip) is comparable.",
        "versions": {
            p: version(p) for p in ("hear21passt", "torch", "torchaudio", "timm", "numpy", "safetensors")
        }
        | {"python": platform.python_version()},
    }
    tensors = {k: v.detach().contiguous().float() for k, v in tensors.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"meta": json.dumps(meta, sort_keys=True)})
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors)", file=sys.stderr
    )


if __name__ == "__main__":
    main()
