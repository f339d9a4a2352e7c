"""soundsift's PaSST against the OFFICIAL implementation (hear21passt 0.0.26), offline.

``tests/fixtures/passt_upstream.safetensors`` was written by ``scripts/upstream_fixtures/passt.sh``,
which runs the official ``hear21passt`` code (front end ``AugmentMelSTFT``, transformer ``PaSST``) at
reduced size (embed_dim 32, depth 2, 2 heads = soundsift's ``size="tiny"``) with seeded random weights
on three clips (0.55 s, 1 s, 2.4 s; snippets reduced to 1 s). Here soundsift loads the official state
dict through its own checkpoint path (``checkpoint=PATH`` -> ``load_pretrained_weights``, which maps the
keys and skips the classifier heads) and must reproduce, in eval mode:

- the log-mel of each clip;
- each snippet's embedding (mean of the final-norm CLS and distillation tokens);
- the snippet-averaged clip embedding, formed as in salsa's training/evaluation path (clip zero-padded,
  trailing partial snippet zero-padded and counted, all-padding snippets masked out) and as salsa's
  bare ``split_audio`` (trailing partial snippet dropped; a clip shorter than a snippet passed whole).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from soundsift.encoders.frontends.kaldi import KaldiLogMel
from soundsift.encoders.layers import split_snippets
from soundsift.encoders.passt import TINY, VARIANTS, PaSSTEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "passt_upstream.safetensors"
# log-mel: soundsift builds the Kaldi mel banks in float64, torchaudio (official) in float32; the banks
# differ by up to 1.3e-5, the normalised log-mel (values in about [-1.4, 2.7]) by up to 3e-5 (mean 7e-7).
MEL_ATOL = 1e-4
# embeddings: measured differences are ~2.4e-7; 1e-5 (stricter than the 1e-4 asked for) because a wrong
# LayerNorm eps (1e-5 instead of the official 1e-6) moves these tiny-model embeddings by only ~2e-5.
EMB_ATOL = 1e-5


def _load():
    with safe_open(str(FIXTURE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["meta"])


TENSORS, META = _load()
N_CLIPS = len(META["lengths_samples"])
WAVES = [TENSORS[f"waveform.{i}"] for i in range(N_CLIPS)]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a.double() - b.double()).abs().max())


def _encoder(name: str, tmp_path: Path, min_remainder_seconds: float) -> PaSSTEncoder:
    """soundsift's tiny PaSST with the official state dict loaded through ``checkpoint=PATH``."""
    info = META["variants"][name]
    variant = info["soundsift_variant"]
    assert (
        VARIANTS[variant].stride == info["stride"]
        and VARIANTS[variant].patch_size == META["model"]["patch_size"]
    )
    prefix = f"{name}.state."
    state = {k[len(prefix) :]: v.clone() for k, v in TENSORS.items() if k.startswith(prefix)}
    assert "head.1.weight" in state and "head_dist.weight" in state  # the official layout, heads included
    path = tmp_path / f"passt_{name}_official.pt"
    torch.save(state, path)
    enc = PaSSTEncoder(
        variant=variant,
        size="tiny",
        pretrained=False,
        checkpoint=path,
        segment_seconds=META["snippet_seconds"],
        min_remainder_seconds=min_remainder_seconds,
    ).eval()
    official_eps = META["layernorm_eps"][name]
    ours_eps = {n: m.eps for n, m in enc.model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert ours_eps == {n: e for n, e in official_eps.items() if not n.startswith("head")}
    loaded = enc.model.state_dict()
    for key, value in state.items():  # every non-head official tensor arrived unchanged
        if not key.startswith("head"):
            assert torch.equal(loaded[key], value), key
    return enc


def test_passt_matches_upstream_fixture_geometry():
    assert META["sample_rate"] == PaSSTEncoder.sample_rate
    assert {k: META["model"][k] for k in TINY} == TINY
    assert tuple(META["model"]["img_size"]) == (128, 998)
    assert META["versions"]["hear21passt"] == "0.0.26"
    seg = int(META["snippet_seconds"] * META["sample_rate"])
    lengths = META["lengths_samples"]
    assert lengths[0] < seg and lengths[1] == seg and lengths[2] > 2 * seg  # the three cases


def test_passt_matches_upstream_frontend():
    front = KaldiLogMel(n_mels=128, sample_rate=32000, fmin_aug_range=10, fmax_aug_range=2000).eval()
    with torch.no_grad():
        for i, w in enumerate(WAVES):
            ours, official = front(w[None])[0], TENSORS[f"logmel.{i}"]
            # values lie in about [-1.4, 3]: an absolute tolerance suffices (see MEL_ATOL)
            assert float(official.abs().max()) < 10
            assert _max_diff(ours, official) <= MEL_ATOL, (
                f"clip {i}: log-mel differs by {_max_diff(ours, official)}"
            )


@pytest.mark.parametrize("name", ["s16", "s10"])
def test_passt_matches_upstream_pipeline(name, tmp_path):
    """salsa's path: pad, unfold, masked mean with ``ceil(audio_length * S)`` snippets = soundsift's
    default ``min_remainder_seconds=0`` (trailing partial snippet zero-padded and counted)."""
    enc = _encoder(name, tmp_path, min_remainder_seconds=0.0)
    lengths = torch.tensor([len(w) for w in WAVES])
    batch = torch.zeros(N_CLIPS, int(lengths.max()))
    for i, w in enumerate(WAVES):
        batch[i, : len(w)] = w
    official_snippets = TENSORS[f"{name}.pipeline.snippet_emb"]
    mask = TENSORS[f"{name}.pipeline.mask"].bool()
    with torch.no_grad():
        snippets, owner, _ = split_snippets(batch, lengths, enc.segment, enc.min_remainder)
        assert torch.equal(torch.bincount(owner, minlength=N_CLIPS), mask.sum(1))
        index = torch.cat([torch.arange(int(c)) for c in mask.sum(1)])
        ours = enc.embed_snippets(snippets)
        assert _max_diff(ours, official_snippets[owner, index]) <= EMB_ATOL
        clip = enc(batch, lengths)
    official_clip = TENSORS[f"{name}.pipeline.clip_emb"]
    assert float(official_clip.std()) > 0.1  # not a degenerate output
    assert _max_diff(clip, official_clip) <= EMB_ATOL


@pytest.mark.parametrize("name", ["s16", "s10"])
def test_passt_matches_upstream_split_audio(name, tmp_path):
    """salsa's bare ``split_audio`` (unfold drops a trailing partial snippet) = soundsift with
    ``min_remainder_seconds`` = the snippet length, for clips of at least one snippet. A clip shorter
    than a snippet is passed whole by salsa; soundsift zero-pads it to a snippet in ``forward``, so
    there only the encoder on the unpadded clip is compared."""
    enc = _encoder(name, tmp_path, min_remainder_seconds=META["snippet_seconds"])
    seg = enc.segment
    official_clip = TENSORS[f"{name}.split.clip_emb"]
    with torch.no_grad():
        short = enc.embed_snippets(WAVES[0][None])
        assert _max_diff(short, TENSORS[f"{name}.split.snippet_emb.0"]) <= EMB_ATOL
        for i in (1, 2):
            w = WAVES[i]
            n = len(w) // seg
            ours = enc.embed_snippets(w[: n * seg].reshape(n, seg))
            assert _max_diff(ours, TENSORS[f"{name}.split.snippet_emb.{i}"]) <= EMB_ATOL
        batch = torch.zeros(2, len(WAVES[2]))
        batch[0, : len(WAVES[1])], batch[1] = WAVES[1], WAVES[2]
        clip = enc(batch, torch.tensor([len(WAVES[1]), len(WAVES[2])]))
    assert _max_diff(clip, official_clip[1:]) <= EMB_ATOL
