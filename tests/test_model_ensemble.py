"""System ensembles at inference: several models as one (index build, search, tag), the mean of the
members' cosine similarities."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.audio import load_audio  # noqa: E402
from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.search.index import load_searcher, open_index  # noqa: E402
from test_index import GOOD, make_library, make_model  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("ens")
    return make_library(base / "sounds"), make_model(base / "a.pt", seed=0), make_model(base / "b.pt", seed=1)


def test_ensemble_scores_are_the_mean_of_the_members_cosines(setup):
    lib, a, b = setup
    ens = load_model([a, b], device="cpu")
    ma, mb = load_model(a, device="cpu"), load_model(b, device="cpu")
    waves = [load_audio(lib / name, ens.sample_rate) for name in sorted(GOOD)[:4]]
    texts = ["a tone", "noise", "a click"]
    got = ens.embed_waveforms(waves) @ ens.embed_texts(texts).T
    expect = np.mean([m.embed_waveforms(waves) @ m.embed_texts(texts).T for m in (ma, mb)], axis=0)
    np.testing.assert_allclose(got, expect, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ens.embed_texts(texts), axis=1), 1.0, atol=1e-6)
    assert ens.embed_dim == ma.embed_dim + mb.embed_dim and ens.identity not in (ma.identity, mb.identity)
    assert load_model([b, a], device="cpu").identity != ens.identity  # the order is part of the system


def test_index_build_and_search_with_several_models(setup, tmp_path, capsys):
    lib, a, b = setup
    out = tmp_path / "idx"
    assert main(["-q", "index", "build", str(lib), "--model", str(a), "--model", str(b), "--out", str(out)]) == 0
    index = open_index(out)
    assert index.model_path == [str(a.resolve()), str(b.resolve())]
    capsys.readouterr()
    # the recorded ensemble is loaded again without --model; its ranking is the mean similarity's
    assert main(["-q", "search", str(out), "a tone", "--json", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    ma, mb = load_model(a, device="cpu"), load_model(b, device="cpu")
    files = sorted(e.path for e in index.entries)
    sim = np.mean([m.embed_waveforms([load_audio(lib / f, m.sample_rate) for f in files])
                   @ m.embed_texts(["a tone"])[0] for m in (ma, mb)], axis=0)
    assert [h["path"] for h in hits] == [files[i] for i in np.argsort(-sim)[:3]]
    assert hits[0]["score"] == pytest.approx(float(sim.max()), abs=1e-4)
    # one member alone is another model: refused as the index's query model
    from soundsift.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError):
        load_searcher(out, model_path=a).search("a tone", 3)
    assert main(["-q", "tag", str(lib / sorted(GOOD)[0]), "--labels", "tone,noise", "--model", str(a),
                 "--model", str(b), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["labels"]) == 2


def test_an_ensemble_needs_two_identified_models():
    from soundsift.checkpoints.ensemble import ModelEnsemble
    from soundsift.errors import ConfigError

    with pytest.raises(ConfigError):
        ModelEnsemble([object()])
    with pytest.raises(ConfigError):
        ModelEnsemble([object(), object()])


def test_members_get_audio_at_their_own_sample_rate():
    from soundsift.checkpoints.ensemble import ModelEnsemble

    class Fake:
        embed_dim, config, tau = 1, None, 0.05

        def __init__(self, rate):
            self.sample_rate, self.identity, self.seen = rate, f"fake{rate}", []

        def embed_waveforms(self, waves, batch_size=32, progress=None):
            self.seen = [len(w) for w in waves]
            return np.ones((len(waves), 1), np.float32)

    slow, fast = Fake(8000), Fake(16000)
    ens = ModelEnsemble([slow, fast])
    assert ens.sample_rate == 16000
    ens.embed_waveforms([np.zeros(16000, np.float32), np.zeros(8000, np.float32)])
    assert fast.seen == [16000, 8000] and slow.seen == [8000, 4000]
