"""The public Python API (``soundsift.list_models``, ``load_model``, ``embed_audio``/``embed_text``,
``build_index``/``open_index``/``search``) behaves as the CLI and the lower-level calls it wraps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import soundsift
from soundsift.cli.main import main

RATE = 16000  # the tiny cnn's sample rate


def tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Two tiny models, and a folder of generated sounds (float WAV at the models' rate: read back exactly)."""
    root = tmp_path_factory.mktemp("api")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = soundsift.DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=16)
        models.append(soundsift.save_model(model, root / f"m{seed}.pt"))
    sounds = root / "sounds"
    sounds.mkdir()
    for i, (freq, seconds) in enumerate([(220, 1.0), (440, 0.5), (880, 1.5), (1760, 0.7), (300, 2.0)]):
        sf.write(sounds / f"s{i}.wav", tone(freq, seconds, i), RATE, subtype="FLOAT")
    return {"models": models, "sounds": sounds, "root": root}


def test_list_models_names_the_published_models_with_descriptions(capsys):
    from soundsift.checkpoints.load import PUBLISHED

    models = soundsift.list_models()
    assert [m.name for m in models] == list(PUBLISHED) and {"salsa", "zero-shot", "laion-clap"} <= set(PUBLISHED)
    assert all(len(m.description) > 20 and m.trained_on and m.source for m in models)
    assert all(len(m.measured) > 20 for m in models)  # what each was measured on, and the figure
    assert "YAMNet" in next(m.description for m in models if m.name == "zero-shot")
    assert main(["models", "--json"]) == 0  # the command shows the same descriptions
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["what"]) for r in rows] == [(m.name, m.description) for m in models]


def test_embed_audio_takes_paths_waveforms_or_a_mix(files):
    model = soundsift.load_model(files["models"][0], device="cpu")
    paths = sorted(files["sounds"].glob("*.wav"))
    waves = [sf.read(p, dtype="float32")[0] for p in paths]
    by_path = model.embed_audio(paths)
    assert by_path.shape == (len(paths), 16) and by_path.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(by_path, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(by_path, model.embed_audio(waves))
    mixed = [str(paths[0]), torch.from_numpy(waves[1]), *waves[2:]]
    np.testing.assert_array_equal(by_path, model.embed_audio(mixed, batch_size=2))
    np.testing.assert_array_equal(model.embed_audio(paths[3]), by_path[3:4])  # one file: a batch of one
    assert not np.allclose(by_path[0], by_path[1])  # different sounds differ
    with pytest.raises(ValueError, match="audio item 0: expected a file path or a non-empty mono"):
        model.embed_audio([np.zeros((2, 100), np.float32)])


def test_embed_text_gives_unit_vectors_in_input_order(files):
    model = soundsift.load_model(files["models"][0], device="cpu")
    texts = ["a dog barks", "rain on a tin roof", "a dog barks"]
    emb = model.embed_text(texts)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    # alone or padded in a batch: equal up to float rounding
    np.testing.assert_allclose(model.embed_text("rain on a tin roof"), emb[1:2], atol=1e-6)


def test_an_ensemble_answers_the_same_calls_with_the_scaled_concatenation(files):
    a, b = (soundsift.load_model(p, device="cpu") for p in files["models"])
    ensemble = soundsift.load_model(files["models"], device="cpu")
    assert isinstance(ensemble, soundsift.ModelEnsemble)
    paths = sorted(files["sounds"].glob("*.wav"))
    audio = ensemble.embed_audio(paths)
    np.testing.assert_allclose(audio, np.concatenate([a.embed_audio(paths), b.embed_audio(paths)], 1) / np.sqrt(2),
                               atol=1e-6)
    text = ensemble.embed_text(["a dog barks", "thunder"])
    np.testing.assert_allclose(text, np.concatenate([a.embed_text(["a dog barks", "thunder"]),
                                                     b.embed_text(["a dog barks", "thunder"])], 1) / np.sqrt(2), atol=1e-6)
    mean = (a.embed_audio(paths) @ a.embed_text(["thunder"]).T + b.embed_audio(paths) @ b.embed_text(["thunder"]).T) / 2
    np.testing.assert_allclose(audio @ text[1:].T, mean, atol=1e-5)  # the mean of the members' similarities
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)


def cli_hits(argv: list[str], capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["-q", "search", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("ensemble", [False, True])
def test_build_open_and_search_rank_as_the_cli(files, tmp_path, capsys, ensemble):
    model = files["models"] if ensemble else files["models"][0]
    out = tmp_path / "idx"
    report = soundsift.build_index(files["sounds"], out, model=model, progress=False)
    assert (report.files, report.embedded, report.skipped) == (5, 5, [])
    index = soundsift.open_index(out)
    assert len(index) == 5
    hits = index.search(text="a high whistle", k=3)
    assert [h.rank for h in hits] == [1, 2, 3] and all(isinstance(h, soundsift.Hit) for h in hits)
    assert [h.to_dict() for h in hits] == cli_hits([str(out), "a high whistle", "-k", "3"], capsys)
    example = files["sounds"] / "s2.wav"
    like = index.search(like=example, k=5)
    assert [h.to_dict() for h in like] == cli_hits([str(out), "--like", str(example), "-k", "5"], capsys)
    assert len(like) == 4 and "s2.wav" not in {h.path for h in like}  # the indexed example is left out
    both = index.search(text="a high whistle", like=example, k=2)
    assert [h.to_dict() for h in both] == cli_hits([str(out), "a high whistle", "--like", str(example), "-k", "2"],
                                                   capsys)
    example_id = index.index.find_file(example)
    assert index.search(like=example_id, k=5) == like  # an indexed id: its stored embedding, left out too
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = index.model.embed_audio(sorted(Path(files["sounds"]).glob("*.wav"))) @ \
        index.model.embed_text("a high whistle")[0]
    assert hits[0].path == f"s{int(np.argmax(expected))}.wav"  # the best match by the model's own embeddings


def test_open_index_refuses_another_model_and_an_empty_query(files, tmp_path):
    from soundsift.errors import ConfigError, ModelMismatchError

    out = tmp_path / "idx"
    soundsift.build_index(files["sounds"], out, model=files["models"][0], progress=False)
    with pytest.raises(ConfigError, match="give a text query"):
        soundsift.open_index(out).search(k=3)
    with pytest.raises(ModelMismatchError, match="built with model"):
        soundsift.open_index(out, model=files["models"][1]).search(text="rain")
    loaded = soundsift.load_model(files["models"][0], device="cpu")
    assert soundsift.open_index(out, model=loaded).search(text="rain", k=5) == \
        soundsift.open_index(out).search(text="rain", k=5)
