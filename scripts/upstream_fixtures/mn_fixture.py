"""Write tests/fixtures/mn_upstream.safetensors by running the OFFICIAL EfficientAT code.

Run through ``scripts/upstream_fixtures/mn.sh`` (it puts an EfficientAT checkout on PYTHONPATH and uses the
throw-away venv of ``env.sh``); this file is soundsift's own code, nothing of EfficientAT is copied here.

What it records (official key names and official outputs, all float32 unless noted):

* ``state_dict.<key>``: the state dict of EfficientAT's ``models.mn.model.get_model(width_mult=0.1)``
  (the width of soundsift's ``MobileNetEncoder(size="tiny")``; default ``se_dims="c"``, MLP head) with
  random seeded weights. BatchNorm affine parameters AND running statistics are set to non-trivial random
  values so that eval-mode BatchNorm is exercised; SE linears get larger weights than the official init so
  the channel gates differ from a constant 0.5.
* ``input.<i>``: deterministic 32-kHz waveforms (1-D) of several lengths: shorter than a snippet, exactly
  one snippet, more than two snippets (with a trailing partial snippet), an exact multiple of snippets.
* ``mel.<i>``: ``models.preprocess.AugmentMelSTFT`` (salsa's arguments: n_mels 128, sr 32000, win 800,
  hop 320, n_fft 1024, freqm 48, timem 192) in eval mode on the clip, shape (128, frames).
* ``features.<i>``: the ``features`` output of the official model (``model(mel[:, None])`` returns
  ``(logits, features)``; features = ``adaptive_avg_pool2d(last feature map, 1)``, the output salsa's
  ``models/audio/efficientat.py`` Wrapper takes: salsa's vendored copy returns features first) of the
  whole clip as a batch of one, shape (1, D).
* ``logits.<i>``: the official classifier output for the whole clip (not compared by soundsift, kept to
  show the state dict is a complete official one).
* ``snippets.<i>``: salsa's ``models/audio/base.py`` ``split_audio`` with segment = hop = SNIPPET_SECONDS:
  a clip shorter than one snippet is passed whole, else ``x.unfold(1, seg, seg)``, which DROPS a
  trailing partial snippet; shape (n_snippets, samples).
* ``snippet_features.<i>``: official features of each snippet (the snippets as one batch), (n, D).
* ``snippet_average.<i>``: mean of ``snippet_features.<i>`` over the snippets, (1, D): salsa averages
  the per-snippet embeddings over frequency (a no-op for pooled features) and then over the snippets with
  its ``audio_length`` mask, which for a single unpadded clip keeps every snippet ``split_audio`` made.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys

import numpy as np
import torch
from safetensors.torch import save_file

SR = 32000
WIDTH = 0.1
SNIPPET_SECONDS = 1.0
SEED = 1234
# samples: shorter than one snippet (and not a multiple of the hop), exactly one snippet, more than two
# snippets with a trailing partial one, an exact multiple of the snippet length
LENGTHS = (17617, 32000, 75853, 64000)


def official_split_audio(x: torch.Tensor, segment_seconds: float, hop_seconds: float) -> torch.Tensor:
    """salsa's ``split_audio`` semantics, written out here: (B, T) -> (B * n, seg) or the input itself."""
    seg, hop = int(segment_seconds * SR), int(hop_seconds * SR)
    if x.shape[1] < seg:
        return x
    return x.unfold(dimension=1, size=seg, step=hop).reshape(-1, seg)


def make_waveform(n: int, gen: torch.Generator, index: int) -> torch.Tensor:
    """A few chirps and tones plus noise, with a slow amplitude envelope; about -12 dBFS."""
    t = torch.arange(n, dtype=torch.float64) / SR
    x = torch.zeros(n, dtype=torch.float64)
    for k in range(3):
        f0 = 110.0 * (index + 2) * (k + 1)
        sweep = 400.0 * (k + 1)
        phase = float(torch.rand((), generator=gen, dtype=torch.float64)) * 2 * math.pi
        x += 0.15 / (k + 1) * torch.sin(2 * math.pi * (f0 * t + 0.5 * sweep * t**2) + phase)
    x += 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    x *= 0.6 + 0.4 * torch.sin(2 * math.pi * 1.3 * t + index)
    return x.float()


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial random parameters and BatchNorm running statistics (in place)."""

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    def uni(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(rnd(*m.weight.shape) * math.sqrt(2.0 / fan_in))
            elif isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(uni((c,), 0.6, 1.4))
                m.bias.copy_(0.1 * rnd(c))
                m.running_mean.copy_(0.2 * rnd(c))
                m.running_var.copy_(uni((c,), 0.5, 2.0))
                m.num_batches_tracked.fill_(int(torch.randint(1, 10000, (1,), generator=gen)))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(rnd(*m.weight.shape) / math.sqrt(m.in_features))
                m.bias.copy_(0.1 * rnd(m.out_features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--upstream-commit", default="unknown")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    # the official modules print (get_model prints the network, AugmentMelSTFT warns about fmax): silence
    with contextlib.redirect_stdout(io.StringIO()):
        import torchaudio
        import torchvision
        from models.mn.model import get_model
        from models.preprocess import AugmentMelSTFT

        model = get_model(num_classes=527, pretrained_name=None, width_mult=WIDTH)
        mel = AugmentMelSTFT(n_mels=128, sr=SR, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192)
    gen = torch.Generator().manual_seed(SEED)
    randomize(model, gen)
    model.eval()
    mel.eval()

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"state_dict.{k}"] = v.detach().clone().contiguous()

    summary = []
    with torch.no_grad():
        for i, n in enumerate(LENGTHS):
            x = make_waveform(n, gen, i)
            spec = mel(x[None])  # (1, 128, frames)
            logits, feats = model(spec[:, None])
            snippets = official_split_audio(x[None], SNIPPET_SECONDS, SNIPPET_SECONDS)
            _, snip_feats = model(mel(snippets)[:, None])
            tensors[f"input.{i}"] = x.clone()
            tensors[f"mel.{i}"] = spec[0].contiguous()
            tensors[f"features.{i}"] = feats.contiguous()
            tensors[f"logits.{i}"] = logits.contiguous()
            tensors[f"snippets.{i}"] = snippets.clone()
            tensors[f"snippet_features.{i}"] = snip_feats.contiguous()
            tensors[f"snippet_average.{i}"] = snip_feats.mean(dim=0, keepdim=True).contiguous()
            summary.append(
                {"samples": n, "seconds": n / SR, "mel_frames": spec.shape[-1], "snippets": snippets.shape[0],
                 "feature_abs_max": float(feats.abs().max())}
            )

    meta = {
        "what": "official EfficientAT MobileNetV3 (models/mn/model.py get_model) + AugmentMelSTFT outputs",
        "upstream": "https://github.com/fschmid56/EfficientAT",
        "upstream_commit": args.upstream_commit,
        "generator": "scripts/upstream_fixtures/mn_fixture.py (via mn.sh)",
        "model_config": {"get_model": {"num_classes": 527, "pretrained_name": None, "width_mult": WIDTH,
                                       "head_type": "mlp", "se_dims": "c", "se_agg": "max", "se_r": 4,
                                       "strides": [2, 2, 2, 2]},
                         "weights": f"random, seed {SEED}; BN weight U(0.6,1.4), bias 0.1 N(0,1), running_mean "
                                    "0.2 N(0,1), running_var U(0.5,2); conv N(0, 2/fan_in); linear N(0, 1/fan_in), "
                                    "bias 0.1 N(0,1)"},
        "frontend_config": {"AugmentMelSTFT": {"n_mels": 128, "sr": SR, "win_length": 800, "hopsize": 320,
                                               "n_fft": 1024, "freqm": 48, "timem": 192, "fmin": 0.0,
                                               "fmax": None, "fmin_aug_range": 10, "fmax_aug_range": 2000},
                            "mode": "eval (fmin 0, fmax 15000, no masking)"},
        "features": "model(mel[:, None]) -> (logits, features); features = adaptive_avg_pool2d(fmap, 1) "
                    "(salsa's Wrapper takes the features)",
        "snippet_seconds": SNIPPET_SECONDS,
        "snippet_average": "salsa models/audio/base.py split_audio with segment_length = hop_size = snippet_seconds: "
                           "clip shorter than a snippet passed whole, else x.unfold(1, seg, seg) (a trailing "
                           "partial snippet is DROPPED); features of each snippet, then the plain mean over the "
                           "snippets (salsa's audio_length mask keeps all of them for one unpadded clip)",
        "clips": summary,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchaudio": torchaudio.__version__, "torchvision": torchvision.__version__,
                     "numpy": np.__version__},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata={"meta": json.dumps(meta, sort_keys=True)})
    print(json.dumps(meta, indent=1, sort_keys=True))
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, {len(tensors)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
