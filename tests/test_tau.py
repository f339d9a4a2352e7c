"""The temperature is part of a model: saved, loaded, read from published checkpoints, used by tagging."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from soundsift.checkpoints import from_pretrained, load_model, save_model, save_pretrained
from soundsift.checkpoints.format import FORMAT, FORMAT_VERSION
from soundsift.errors import ConfigError, ModelFileError
from soundsift.model import DEFAULT_TAU, DualEncoder

TINY = {"audio_encoder": {"name": "cnn", "size": "tiny"}, "text_encoder": {"name": "tiny-bert"}, "embed_dim": 8}


def tiny(tau: float = DEFAULT_TAU) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder.from_config(TINY, tau=tau)


def test_default_is_the_papers_and_a_bad_tau_is_refused():
    assert DEFAULT_TAU == 0.05 and DualEncoder(**TINY).tau == 0.05
    with pytest.raises(ConfigError, match="tau"):
        DualEncoder(**TINY, tau=0)


def test_model_file_keeps_tau_and_older_readers_still_read_it(tmp_path):
    path = save_model(tiny(0.07), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    # an added field: the format tag and version older soundsift checks are unchanged, the config too
    assert payload["format"] == FORMAT and payload["version"] == FORMAT_VERSION == 1
    assert payload["tau"] == 0.07 and "tau" not in payload["config"]
    assert load_model(path, device="cpu").tau == 0.07


def test_a_model_file_without_tau_loads_with_the_default(tmp_path):
    path = save_model(tiny(0.07), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["tau"]  # as written before the field existed
    torch.save(payload, path)
    assert load_model(path, device="cpu").tau == DEFAULT_TAU


def test_a_model_file_with_a_meaningless_tau_names_the_file(tmp_path):
    path = save_model(tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["tau"] = -1.0
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="m.pt: tau"):
        load_model(path, device="cpu")


def test_hugging_face_layout_keeps_tau_and_old_folders_load_with_the_default(tmp_path):
    folder = save_pretrained(tiny(0.02), tmp_path / "hf")
    doc = json.loads((folder / "config.json").read_text())
    assert doc["tau"] == 0.02 and from_pretrained(folder).tau == 0.02
    del doc["tau"]
    (folder / "config.json").write_text(json.dumps(doc))
    assert from_pretrained(folder).tau == DEFAULT_TAU


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tagging_probabilities_use_the_models_tau(tmp_path):
    from soundsift.search.tag import tag_files

    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    labels = ["dog", "rain", "a bell"]
    found = {}
    for tau in (0.05, 0.5):
        model = tiny(tau).eval()
        results = tag_files(model, files, labels)
        sims = np.stack([[x["score"] for x in sorted(r["labels"], key=lambda x: labels.index(x["label"]))]
                         for r in results])
        probs = np.stack([[x["probability"] for x in sorted(r["labels"], key=lambda x: labels.index(x["label"]))]
                          for r in results])
        np.testing.assert_allclose(probs, _softmax(sims / tau), atol=2e-5)
        found[tau] = probs
    assert np.abs(found[0.05] - found[0.5]).max() > 1e-3  # same model weights, another temperature


def test_an_ensembles_tau_is_the_mean_of_its_members(tmp_path):
    from soundsift.checkpoints.ensemble import ModelEnsemble

    a, b = tiny(0.05), tiny(0.07)
    a.identity, b.identity = "a", "b"
    assert ModelEnsemble([a, b]).tau == pytest.approx(0.06)


@pytest.mark.slow
def test_a_trained_model_records_the_loss_tau(tmp_path):
    from soundsift.cli.main import main

    data, out = tmp_path / "synth", tmp_path / "run"
    assert main(["-q", "synth", "--preset", "tiny", "--seed", "0", "--out", str(data)]) == 0
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={out}",
                 "model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}",
                 "model.embed_dim=16", "optim.epochs=1", "optim.batch_size=16", "loss.tau=0.07",
                 "trainer.progress_bar=false"]) == 0
    assert torch.load(out / "model.pt", weights_only=True)["tau"] == 0.07
    assert load_model(out / "model.pt", device="cpu").tau == 0.07
