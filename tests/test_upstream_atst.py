"""soundsift's ATST-Frame against outputs of the OFFICIAL code (Audio-WestlakeU/audiossl FrameAST).

``tests/fixtures/atst_upstream.safetensors`` is written by ``scripts/upstream_fixtures/atst.sh``, which
runs the official ``FrameAST`` (reduced size, seeded random weights) and the official front end
(torchaudio MelSpectrogram -> AmplitudeToDB(top_db=80) -> clamp(-50, 80) -> MinMax, one snippet at a
time) and averages tokens as salsa does. Here soundsift's ``ATSTFrameEncoder(size="tiny")`` loads the
official weights through its own checkpoint path (the Lightning ``encoder.encoder.`` layout, through
``load_pretrained_weights`` and ``convert_atst_checkpoint``) and must reproduce every recorded quantity.

Tolerance: absolute 1e-4 on every compared tensor. All of them are O(1) (min-max scaled log-mels in about
[-1, 1], LayerNorm-ed tokens and their means), so no relative criterion is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from soundsift.encoders.atst import ATSTFrameEncoder, convert_atst_checkpoint
from soundsift.encoders.layers import split_snippets

FIXTURE = Path(__file__).parent / "fixtures" / "atst_upstream.safetensors"
ATOL = 1e-4


@pytest.fixture(scope="module")
def upstream():
    with safe_open(str(FIXTURE), framework="pt") as f:
        data = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["meta"])
    state = {k[len("state_dict/"):]: v for k, v in data.items() if k.startswith("state_dict/")}
    return data, state, meta


def build(upstream, tmp_path_factory, min_remainder_seconds: float = 0.0) -> ATSTFrameEncoder:
    _, state, meta = upstream
    path = tmp_path_factory.mktemp("atst") / "atst_tiny.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, path)  # Lightning-style container
    enc = ATSTFrameEncoder(
        size="tiny", pretrained=False, checkpoint=path, segment_seconds=meta["segment_seconds"],
        min_remainder_seconds=min_remainder_seconds, freq_warp_max_drop=0.0, progress=False,
    )
    return enc.eval()


@pytest.fixture(scope="module")
def encoder(upstream, tmp_path_factory):
    return build(upstream, tmp_path_factory)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.3g} > {ATOL}"


def test_atst_matches_upstream_checkpoint_keys(upstream, encoder):
    _, state, _ = upstream
    assert all(k.startswith("encoder.encoder.") for k in state)  # the released checkpoint layout
    converted = convert_atst_checkpoint(state)
    own = encoder.model.state_dict()
    assert set(converted) == set(own)
    for key, value in converted.items():  # loaded bit for bit
        assert torch.equal(own[key], value.to(own[key].dtype)), key


def test_atst_matches_upstream_front_end(upstream, encoder):
    data, _, _ = upstream
    with torch.no_grad():
        for i, n in enumerate(data["lengths"].tolist()):  # whole clips, one at a time
            assert_close(encoder.mel(data["wave"][i : i + 1, :n])[0], data[f"mel_clip_{i}"], f"mel of clip {i}")
        # the zero-padded snippets, all in one batch: top_db stays per snippet
        assert_close(encoder.mel(data["snippets"]), data["mel_snippets"], "mel of snippets")


def test_atst_matches_upstream_snippets_and_tokens(upstream, encoder):
    data, _, _ = upstream
    snippets, owner, valid = split_snippets(data["wave"], data["lengths"], encoder.segment)
    assert torch.equal(snippets, data["snippets"])  # salsa's zero-padded unfold, same order
    assert torch.equal(owner, data["snippet_owner"])
    assert torch.equal(valid, data["snippet_valid"])
    with torch.no_grad():
        tokens = encoder.model(encoder.mel(snippets))
    assert_close(tokens, data["tokens"], "frame tokens")


def test_atst_matches_upstream_snippet_embeddings(upstream, encoder):
    data, _, _ = upstream
    with torch.no_grad():
        means, counts = encoder.embed_snippets(data["snippets"], data["snippet_valid"])
    assert torch.equal(counts, data["snippet_counts"])  # tokens covering real audio (salsa's mask)
    assert_close(means, data["snippet_means"], "per-snippet embeddings")


def test_atst_matches_upstream_clip_embeddings(upstream, encoder):
    data, _, _ = upstream
    with torch.no_grad():
        out = encoder(data["wave"], data["lengths"])
    assert_close(out, data["clip_embeddings"], "snippet-averaged clip embeddings")
    with torch.no_grad():  # one clip at a time, unpadded batch: same result
        for i, n in enumerate(data["lengths"].tolist()):
            single = encoder(data["wave"][i : i + 1, :n])
            assert_close(single[0], data["clip_embeddings"][i], f"clip {i} alone")


def test_atst_matches_upstream_unfold_drops_partial_snippet(upstream, tmp_path_factory):
    """salsa's ``split_audio`` on raw audio (``unfold``: the trailing partial snippet dropped) is
    ``min_remainder_seconds=segment_seconds``, for clips at least one snippet long."""
    data, _, meta = upstream
    enc = build(upstream, tmp_path_factory, min_remainder_seconds=meta["segment_seconds"])
    idx = data["unfold_clip_index"]
    lengths = data["lengths"][idx]
    waves = data["wave"][idx]
    with torch.no_grad():
        snippets, owner, valid = split_snippets(waves, lengths, enc.segment, enc.min_remainder)
        means, counts = enc.embed_snippets(snippets, valid)
        out = enc(waves, lengths)
    assert torch.equal(idx[owner], data["unfold_snippet_owner"])
    assert bool((counts == enc.segment // 640).all())  # every kept snippet is whole
    assert_close(means, data["unfold_snippet_means"], "per-snippet embeddings (unfold)")
    assert_close(out, data["unfold_clip_embeddings"], "clip embeddings (unfold)")
