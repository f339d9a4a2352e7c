"""The settings of the authors' runs (salsa), each checked: LR schedule end, float32 similarities under
bf16 autocast, RoBERTa dropout, MN snippet averaging, and what the paper configs resolve to."""

from __future__ import annotations

import math

import pytest
import torch

from soundsift.config import load_config
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble


def naive_lr(epoch_float: float, base: float, low: float, warmup: float, decay_end: float) -> float:
    """salsa's schedule written out: linear warm-up, cosine from warm-up end to decay_end, then flat."""
    if epoch_float < warmup:
        return base * epoch_float / warmup
    if epoch_float >= decay_end:
        return low
    progress = (epoch_float - warmup) / (decay_end - warmup)
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * progress))


def test_paper_schedule_reaches_min_lr_at_epoch_15_and_stays():
    from soundsift.training.module import lr_schedule

    typed = load_config("paper/table1-passt-stage1.yaml").optim
    optim = typed.model_dump()
    assert optim["decay_epochs"] == 15 and optim["epochs"] == 20
    steps = 200
    schedule = lr_schedule(typed, steps)
    base, low = optim["lr"], optim["min_lr"]
    for epoch in (0, 1, 10, 15, 19):
        got = base * schedule(epoch * steps)
        want = naive_lr(epoch + (1 / steps if epoch == 0 else 0), base, low, 1, 15)  # step 0 is (0+1)/warmup
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), epoch
    assert base * schedule(15 * steps) == pytest.approx(low) and base * schedule(20 * steps - 1) == pytest.approx(low)
    assert base * schedule(1 * steps) == pytest.approx(base)
    whole = lr_schedule(typed.model_copy(update={"decay_epochs": None}), steps)  # the paper's text: decay over all epochs
    assert base * whole(15 * steps) > 10 * low and base * whole(20 * steps) == pytest.approx(low)


def test_decay_epochs_must_fit_the_run():
    from soundsift.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.decay_epochs must lie between"):
        load_config("paper/table1-passt-stage1.yaml", ["optim.decay_epochs=25"])


def test_similarities_are_float32_under_bf16_autocast():
    from soundsift.training.module import RetrievalModule

    config = load_config("demo/stage1.yaml", [
        "model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=6",
        "loss.distill_weight=1", "teachers=[x]",
    ])
    gen = torch.Generator().manual_seed(0)
    teacher = TeacherEmbeddings(
        clip_ids=["a", "b", "c"], audio=torch.randn(3, 6, generator=gen), caption_texts=["x", "y", "z", "w"],
        caption_clip=torch.tensor([0, 1, 2, 2]), captions=torch.randn(4, 6, generator=gen),
    )
    module = RetrievalModule.from_config(config, TeacherEnsemble([teacher]))
    audio = torch.nn.functional.normalize(torch.randn(3, 6, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=1)
    clips, captions = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (audio @ text.T).dtype == torch.bfloat16  # what autocast would do to a plain product
        similarity, target = module.similarities(audio, text, clips, captions)
    assert similarity.dtype == torch.float32 and target.dtype == torch.float32
    assert torch.equal(similarity, audio @ text.T)  # exactly the float32 product
    assert torch.equal(target, module.teachers.batch_similarity(clips, captions))


def test_dropout_reaches_the_transformers_config():
    from soundsift.encoders.text import TinyBertTextEncoder

    encoder = TinyBertTextEncoder(dropout=0.2)
    assert encoder.backbone.config.hidden_dropout_prob == 0.2
    assert encoder.backbone.config.attention_probs_dropout_prob == 0.2
    rates = {m.p for m in encoder.backbone.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.2}
    assert load_config("paper/clotho-base.yaml").to_dict()["model"]["text_encoder"]["dropout"] == 0.2


def test_mn_snippet_average_is_the_mean_of_per_snippet_embeddings():
    from soundsift.encoders.mn import MobileNetEncoder

    torch.manual_seed(0)
    windowed = MobileNetEncoder(size="tiny", segment_seconds=0.5).eval()
    whole = MobileNetEncoder(size="tiny").eval()
    whole.load_state_dict(windowed.state_dict())
    seg = windowed.segment
    wav = torch.randn(2, int(2.3 * seg))
    lengths = torch.tensor([wav.shape[1], int(1.2 * seg)])
    with torch.no_grad():
        out = windowed(wav, lengths)
        for i, n in enumerate(lengths.tolist()):
            pieces = [wav[i, s:min(s + seg, n)] for s in range(0, n, seg)]
            padded = torch.stack([torch.nn.functional.pad(p, (0, seg - len(p))) for p in pieces])
            each = whole.embed_clips(padded, torch.tensor([len(p) for p in pieces]), whole=False)
            torch.testing.assert_close(out[i], each.mean(0), rtol=1e-5, atol=1e-6)
        one_pass = whole(wav[:1])[0]  # windowing changes the result
        assert (out[0] - one_pass).abs().max() > 1e-3 * one_pass.abs().max()
    assert load_config("paper/table1-mn-stage1.yaml").to_dict()["model"]["audio_encoder"]["segment_seconds"] == 10


def test_paper_configs_follow_salsa():
    atst = load_config("paper/table1-atst-stage1.yaml").to_dict()["model"]["audio_encoder"]
    assert atst["freq_warp_max_drop"] == 0.0  # salsa discards the warped spectrogram
    for name in ("table1-passt-stage1", "table1-mn-stage2-self", "table2-passt-stage2-estimated"):
        config = load_config(f"paper/{name}.yaml").to_dict()
        assert config["optim"]["decay_epochs"] == 15 and config["model"]["text_encoder"]["dropout"] == 0.2
