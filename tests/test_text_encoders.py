"""Text encoders: the tiny random BERT (fast) and the offline MiniLM shipped in a PyPI package."""

from __future__ import annotations

import pickle

import pytest
import torch

from soundsift.encoders import build_text_encoder
from soundsift.encoders.text import HFTextEncoder, normalise_caption
from soundsift.errors import CaptionError, SoundsiftError

CAPTIONS = ["A dog barks, loudly!", "rain falls on a roof", "Birds chirp in the morning."]


@pytest.fixture(scope="module")
def tiny() -> HFTextEncoder:
    return build_text_encoder("tiny-bert")


class CountCalls:
    """Counts backbone forward calls through a forward pre-hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


def test_normalise_caption():
    assert normalise_caption("A Dog, barks!") == "a dog barks"
    assert normalise_caption("It's a 'test' (x-y).") == "its a test xy"
    assert normalise_caption("A Dog!", lowercase=False) == "A Dog"
    assert normalise_caption("A Dog!", strip_punctuation=False) == "a dog!"


def test_tiny_bert_forward_backward(tiny):
    tiny.train()
    out = tiny(CAPTIONS)
    assert out.shape == (3, 32) and tiny.out_dim == 32
    out.square().sum().backward()
    grads = [p.grad for p in tiny.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    tiny.zero_grad()


def test_tiny_bert_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_text_encoder("tiny-bert")
    after = torch.rand(1)
    b = build_text_encoder("tiny-bert")
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = build_text_encoder("tiny-bert", seed=1)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_cls_and_mean_pooling(tiny):
    mean = build_text_encoder("tiny-bert", pooling="mean").eval()
    cls = tiny.eval()
    texts = ["a dog barks", "a much longer caption about rain falling on a tin roof"]
    with torch.no_grad():
        tok = cls.tokenizer(texts, padding=True, return_tensors="pt")
        hidden = cls.backbone(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])[0]
        torch.testing.assert_close(cls(texts), hidden[:, 0])
        m = tok["attention_mask"][..., None].float()
        torch.testing.assert_close(mean(texts), (hidden * m).sum(1) / m.sum(1))
        assert not torch.allclose(mean(texts), cls(texts))


def test_normalisation_applies_before_tokenising(tiny):
    tiny.eval()
    with torch.no_grad():
        torch.testing.assert_close(tiny(["A DOG, barks!"]), tiny(["a dog barks"]))
        raw = build_text_encoder("tiny-bert", lowercase=False, strip_punctuation=False).eval()
        assert not torch.allclose(raw(["a dog, barks!"]), raw(["a dog barks"]))


def test_max_tokens_truncates():
    enc = build_text_encoder("tiny-bert", max_tokens=4, pooling="mean").eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(["one two three four five six"]), enc(["one two three seven"]))


def test_empty_caption_error_names_index(tiny):
    with pytest.raises(ValueError, match="caption 1 is empty"):
        tiny(["a dog", "   "])
    with pytest.raises(ValueError, match="caption 2 is empty after normalisation"):
        tiny(["a dog", "rain", "?!"])
    with pytest.raises(ValueError, match="caption 0 is not a string"):
        tiny([None])
    with pytest.raises(CaptionError) as info:  # a user error (one line from the CLI), still a ValueError
        tiny(["a dog", "!!!"])
    assert isinstance(info.value, SoundsiftError) and (info.value.index, info.value.text) == (1, "!!!")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and str(again.as_input("label")) == (
        "label '!!!' is empty after normalisation (punctuation only)")
    with pytest.raises(TypeError, match="list of captions"):
        tiny("a dog")


def test_frozen_has_no_grads_and_stays_in_eval():
    enc = build_text_encoder("tiny-bert", freeze=True, cache=False)
    enc.train()
    assert not enc.backbone.training
    assert all(not p.requires_grad for p in enc.backbone.parameters())
    out = enc(CAPTIONS)
    assert not out.requires_grad
    torch.testing.assert_close(out, enc(CAPTIONS), rtol=0, atol=0)  # no dropout although .train()


def test_cache_hit_skips_backbone_and_returns_identical_tensor():
    enc = build_text_encoder("tiny-bert", freeze=True, cache=True)
    calls = CountCalls(enc.backbone)
    first = enc(["A dog barks.", "rain"])
    assert calls.n == 1 and enc.cache_size == 2
    again = enc(["a dog barks", "rain", "a dog barks"])  # same normalised texts
    assert calls.n == 1
    assert (
        torch.equal(again[0], first[0])
        and torch.equal(again[2], first[0])
        and torch.equal(again[1], first[1])
    )
    enc(["rain", "new caption"])
    assert calls.n == 2 and enc.cache_size == 3
    # the cached values equal a fresh computation
    fresh = build_text_encoder("tiny-bert", freeze=True, cache=False)
    torch.testing.assert_close(fresh(["new caption"]), enc(["new caption"]))


def test_precompute_fills_cache_in_batches():
    enc = build_text_encoder("tiny-bert", freeze=True)
    calls = CountCalls(enc.backbone)
    texts = [f"caption number {i}" for i in range(10)] + ["Caption number 3!"]
    enc.precompute(texts, batch_size=4, progress=False)
    assert calls.n == 3 and enc.cache_size == 10
    enc(texts)
    assert calls.n == 3
    with pytest.raises(RuntimeError, match="frozen"):
        build_text_encoder("tiny-bert").precompute(texts)


def test_frozen_pretrained_flag():
    assert not getattr(build_text_encoder("tiny-bert", freeze=True).backbone, "frozen_pretrained", False)


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot load text model"):
        HFTextEncoder(str(tmp_path / "nope"), local_files_only=True)


def test_minilm_offline_semantics():
    enc = build_text_encoder("minilm")
    assert enc.out_dim == 384 and enc.freeze and enc.backbone.frozen_pretrained
    emb = torch.nn.functional.normalize(
        enc(["a dog barks", "a dog is barking", "rain falls on a roof"]), dim=-1
    )
    assert emb.shape == (3, 384)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_minilm_finetunable():
    enc = build_text_encoder("minilm", freeze=False)
    assert all(p.requires_grad for p in enc.backbone.parameters())
    enc(["a dog barks"]).sum().backward()
    assert enc.backbone.embeddings.word_embeddings.weight.grad is not None


def test_loading_weights_clears_cache():
    enc = build_text_encoder("tiny-bert", freeze=True)
    before = enc(["a dog barks"])
    other = build_text_encoder("tiny-bert", freeze=True, seed=5)
    parent = torch.nn.ModuleDict({"text": enc})
    parent.load_state_dict({"text." + k: v for k, v in other.state_dict().items()})
    assert enc.cache_size == 0
    after = enc(["a dog barks"])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, other(["a dog barks"]))
