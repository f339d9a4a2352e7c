"""PaSST (Koutini et al., 2022), the paper's main audio encoder, with the official checkpoints.

The transformer is written here with the parameter names of the official model (``kkoutini/PaSST``,
``hear21passt``): ``patch_embed.proj``, ``cls_token``, ``dist_token``, ``new_pos_embed``,
``freq_new_pos_embed``, ``time_new_pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``
and ``norm``, so the released state dicts load with nothing missing (their ``head.*``/``head_dist.*``
classifiers are skipped: the encoder returns the pre-classifier embedding). Writing it here instead of
importing ``hear21passt`` avoids its hard dependencies on torchaudio and timm (timm imports torchvision).

How the paper (and its code, ``OptimusPrimus/salsa``) uses it: 32 kHz, 128-bin Kaldi log-mel
(``kaldi_mel.KaldiLogMel``); audio cut into non-overlapping 10-s snippets, each zero-padded to 10 s,
whose embeddings are averaged; embedding = mean of the final-norm CLS and distillation tokens (what the
model feeds its classifier); structured patchout of 2 frequency and 15 time patch rows/columns in
training only. A trailing remainder shorter than 10 s is zero-padded and counts as one snippet, like
salsa's length mask (``min_remainder_seconds`` drops remainders shorter than that instead).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from soundsift.encoders.base import AudioEncoder
from soundsift.encoders.export_plan import AudioExportPlan, Call
from soundsift.encoders.frontends.kaldi import KaldiLogMel
from soundsift.encoders.layers import TransformerBlock, average_by_owner, init_vit_weights, split_snippets
from soundsift.encoders.options import PasstCfg
from soundsift.encoders.pretrained import PretrainedWeights, load_pretrained_weights, resolve_pretrained
from soundsift.errors import ConfigError

_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"


@dataclass(frozen=True)
class PaSSTConfig:
    """Geometry of a PaSST model and where its AudioSet checkpoint lives."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    stride: int = 16
    n_mels: int = 128
    input_tdim: int = 998  # mel frames the time positional encoding was built for (10 s)
    weights: PretrainedWeights | None = None


def _weights(name: str, path: str) -> PretrainedWeights:
    # no checksums are published; download_checkpoint logs the digest it sees
    return PretrainedWeights(
        name, f"{_RELEASES}/{path}", ignore_unexpected=("head.*", "head_dist.*"),  # AudioSet classifiers
        source="default_cfgs of kkoutini/PaSST models/passt.py (also hear21passt 0.0.26)",
    )


VARIANTS: dict[str, PaSSTConfig] = {
    "passt_s_p16_s16_128_ap468": PaSSTConfig(
        stride=16, weights=_weights("passt_s_p16_s16_128_ap468", "v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt")
    ),
    "passt_s_swa_p16_128_ap476": PaSSTConfig(
        stride=10, weights=_weights("passt_s_swa_p16_128_ap476", "v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt")
    ),
    "passt_s_kd_p16_128_ap486": PaSSTConfig(
        stride=10, weights=_weights("passt_s_kd_p16_128_ap486", "v.0.0.9/passt-s-kd-ap.486.pt")
    ),
    "passt_l_kd_p16_128_ap47": PaSSTConfig(
        stride=10, depth=7, weights=_weights("passt_l_kd_p16_128_ap47", "v.0.0.10/passt-l-kd-ap.47.pt")
    ),
}
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


class PaSST(nn.Module):
    """PaSST transformer: ``(N, 1, n_mels, frames)`` log-mels -> ``(N, embed_dim)`` embeddings."""

    def __init__(self, cfg: PaSSTConfig, s_patchout_t: int = 0, s_patchout_f: int = 0) -> None:
        super().__init__()
        self.cfg, self.s_patchout_t, self.s_patchout_f = cfg, s_patchout_t, s_patchout_f
        d = cfg.embed_dim
        self.grid = (
            (cfg.n_mels - cfg.patch_size) // cfg.stride + 1,
            (cfg.input_tdim - cfg.patch_size) // cfg.stride + 1,
        )
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, d, kernel_size=cfg.patch_size, stride=cfg.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, self.grid[0], 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, self.grid[1]))
        self.blocks = nn.Sequential(
            *[TransformerBlock(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.trunc_normal_(self.time_new_pos_embed, std=0.02)
        self.blocks.apply(init_vit_weights)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(mel)  # (N, D, F', T')
        n, _, f_dim, t_dim = x.shape
        if t_dim > self.grid[1] or f_dim != self.grid[0]:
            raise ValueError(
                f"PaSST: got a {f_dim}x{t_dim} patch grid, the positional encodings cover "
                f"{self.grid[0]}x{self.grid[1]} (inputs of at most {self.cfg.input_tdim} frames)"
            )
        x = x + self.time_new_pos_embed[..., :t_dim] + self.freq_new_pos_embed
        if self.training and self.s_patchout_t:
            keep = torch.randperm(t_dim, device=x.device)[: max(1, t_dim - self.s_patchout_t)].sort().values
            x = x[..., keep]
        if self.training and self.s_patchout_f:
            keep = torch.randperm(f_dim, device=x.device)[: max(1, f_dim - self.s_patchout_f)].sort().values
            x = x[:, :, keep]
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(n, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(n, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        return (x[:, 0] + x[:, 1]) / 2


# --------------------------------------------------------------------------- encoder


class PaSSTEncoder(AudioEncoder):
    """PaSST audio encoder: ``(B, T)`` 32-kHz waveforms (+ lengths) -> ``(B, out_dim)`` (768) embeddings.

    ``pretrained`` (default: True for ``size="full"``) downloads the variant's AudioSet checkpoint into
    the soundsift cache; ``checkpoint=PATH`` loads a local copy instead (offline use). ``size="tiny"``
    builds a 2-block, 32-wide model with the same front end and patch geometry, for tests.
    """

    Options = PasstCfg

    sample_rate = 32000
    #: every snippet is ``segment`` samples whatever the batch, so a clip embeds as it would alone
    batch_invariant = True

    def __init__(
        self,
        variant: str = "passt_s_p16_s16_128_ap468",
        pretrained: bool | None = None,
        checkpoint: str | Path | None = None,
        size: str = "full",
        s_patchout_t: int = 15,
        s_patchout_f: int = 2,
        segment_seconds: float = 10.0,
        min_remainder_seconds: float = 0.0,
        freqm: int = 0,
        timem: int = 0,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown PaSST variant {variant!r}; known: {', '.join(VARIANTS)}")
        pretrained = resolve_pretrained("PaSST", size, pretrained, checkpoint)
        full = VARIANTS[variant]
        cfg = full if size == "full" else replace(full, **TINY, weights=replace(full.weights, url=None))
        self.variant, self.cfg = variant, cfg
        self.segment = int(round(segment_seconds * self.sample_rate))
        self.min_remainder = int(round(min_remainder_seconds * self.sample_rate))
        self.mel = KaldiLogMel(
            n_mels=cfg.n_mels,
            sample_rate=self.sample_rate,
            freqm=freqm,
            timem=timem,
            fmin_aug_range=fmin_aug_range,
            fmax_aug_range=fmax_aug_range,
        )
        self.model = PaSST(cfg, s_patchout_t=s_patchout_t, s_patchout_f=s_patchout_f)
        frames = 1 + (self.segment - 1) // self.mel.hop_length
        if (frames - cfg.patch_size) // cfg.stride + 1 > self.model.grid[1]:
            raise ConfigError(
                f"segment_seconds={segment_seconds} gives {frames} mel frames; PaSST's time positional "
                f"encoding covers {cfg.input_tdim} (10 s)"
            )
        self.out_dim = cfg.embed_dim
        if checkpoint is not None or pretrained:
            self.load_pretrained(checkpoint, cache_dir=cache_dir, progress=progress)

    def load_pretrained(
        self, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
    ) -> None:
        """Load the official weights (from ``checkpoint`` or the download cache), checking every key."""
        load_pretrained_weights(self.model, self.cfg.weights, checkpoint, cache_dir, progress)

    def embed_snippets(self, snippets: torch.Tensor) -> torch.Tensor:
        """``(N, segment)`` waveforms -> ``(N, out_dim)``: one PaSST pass per snippet."""
        return self.model(self.mel(snippets).unsqueeze(1))

    def export_plan(self) -> AudioExportPlan:
        return AudioExportPlan(core=Call(self, "embed_snippets"), split="snippets", window=self.segment,
                               min_remainder=self.min_remainder)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        snippets, owner, _ = split_snippets(waveform, lengths, self.segment, self.min_remainder)
        return average_by_owner(self.embed_snippets(snippets), owner, waveform.shape[0])
