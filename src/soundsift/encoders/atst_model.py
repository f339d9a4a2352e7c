"""ATST-Frame's transformer (Li et al., 2024) with the state-dict layout of the official ``FrameAST``.

Facts from ``Audio-WestlakeU/audiossl`` (``methods/atstframe/audio_transformer.py``) and its copy in
``Audio-WestlakeU/ATST-SED`` (``desed_task/nnet/atst``): 64-bin log-mel input cut into 64x4 patches
(all bins x 4 frames = 40 ms per token), each flattened frequency-major (``f * 4 + t``) and embedded by
``patch_embed.patch_embed`` (a Linear); positional embedding ``pos_embed`` of shape
``(1, 1001 // 4 + 1, D)`` whose entry 0 is unused ("cut" mode adds entries ``1..W``); 12 pre-norm blocks
with bias-free ``qkv`` (same names as PaSST's); final ``norm_frame`` LayerNorm (eps 1e-6);
``mask_embed`` exists for masked pretraining only (kept here as a buffer so the keys match without
leaving an unused parameter for DDP).

``convert_atst_checkpoint`` maps the released Lightning checkpoints (``atst_as2M.ckpt``: keys under
``encoder.encoder.``; pretraining checkpoints: ``model.teacher.encoder.``) to this layout, following
the key mapping ATST-SED uses before its strict load.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from soundsift.encoders.layers import TransformerBlock, init_vit_weights
from soundsift.encoders.pretrained import map_keys

_RULES: list[tuple[str, str | None]] = [
    (r"^encoder\.encoder\.teacher_module\.", None),
    (r"^encoder\.encoder\.frame_encoder\.", ""),
    (r"^encoder\.encoder\.", ""),
    (r"^model\.teacher\.encoder\.cls_token$", None),
    (r"^model\.teacher\.encoder\.norm\.", "norm_frame."),
    (r"^model\.teacher\.encoder\.", ""),
]


def convert_atst_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ATST(-Frame) checkpoint keys -> ``FrameAST`` keys; other entries (heads, student) dropped.

    A state dict already in ``FrameAST`` layout is returned unchanged.
    """
    if any(k.startswith(("encoder.encoder.", "model.teacher.encoder.")) for k in state_dict):
        return map_keys(state_dict, _RULES, drop_unmatched=True)
    return dict(state_dict)


class FrameAST(nn.Module):
    """``(N, n_mels, frames)`` normalised log-mels -> ``(N, frames // patch_w, D)`` frame tokens."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        n_mels: int = 64,
        patch_w: int = 4,
        spec_w: int = 1001,
    ) -> None:
        super().__init__()
        self.n_mels, self.patch_w = n_mels, patch_w
        self.max_tokens = spec_w // patch_w
        self.patch_embed = nn.Module()
        self.patch_embed.patch_embed = nn.Linear(n_mels * patch_w, embed_dim)
        self.register_buffer("mask_embed", torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.max_tokens + 1, embed_dim))
        self.blocks = nn.ModuleList(
            [TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias=False) for _ in range(depth)]
        )
        self.norm_frame = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_embed, std=0.02)
        self.apply(init_vit_weights)

    def patchify(self, mel: torch.Tensor) -> torch.Tensor:
        """``(N, F, T)`` -> ``(N, T // patch_w, F * patch_w)``, each patch flattened frequency-major."""
        n, f, t = mel.shape
        if f != self.n_mels:
            raise ValueError(f"FrameAST expects {self.n_mels} mel bins, got {f}")
        w = t // self.patch_w
        if w < 1 or w > self.max_tokens:
            raise ValueError(
                f"FrameAST takes {self.patch_w}..{self.max_tokens * self.patch_w + 3} frames, got {t}"
            )
        x = mel[:, :, : w * self.patch_w].reshape(n, f, w, self.patch_w)
        return x.permute(0, 2, 1, 3).reshape(n, w, f * self.patch_w)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.patch_embed(self.patchify(mel))
        x = x + self.pos_embed[:, 1 : x.shape[1] + 1]
        for block in self.blocks:
            x = block(x)
        return self.norm_frame(x)
