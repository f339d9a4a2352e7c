"""Correspondence estimators as plug-ins: each estimator on a tiny split against a naive reference, their
selection in configs and on the command line, and the measures against the generated benchmark's truth."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from soundsift.cli.main import main
from soundsift.config import DEFAULTS, EstimatorConfig, load_config, unregister_estimator
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble
from soundsift.data.dataset import flatten_captions
from soundsift.data.readers import read_split
from soundsift.errors import ConfigError
from soundsift.estimators import (
    caption_mean_embeddings,
    caption_similarity,
    column_softmax_mass,
    combine_embeddings,
)
from soundsift.training import estimators as est


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from soundsift.data.synth.benchmark import generate

    return generate(tmp_path_factory.mktemp("est") / "synth", preset="tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def split(data):
    return read_split("clotho", data, "development")


def random_teacher(split, dim: int, seed: int) -> TeacherEmbeddings:
    g = torch.Generator().manual_seed(seed)
    texts, clip_of = flatten_captions(split)
    return TeacherEmbeddings([c.clip_id for c in split.clips], torch.randn(len(split.clips), dim, generator=g), texts,
                             clip_of, torch.randn(len(texts), dim, generator=g), meta={"model_identity": f"r{seed}"})


def naive_caption_similarity(captions: torch.Tensor, caption_clip: list[int], n_clips: int) -> torch.Tensor:
    out = torch.zeros(n_clips, len(caption_clip), dtype=torch.float64)
    for i in range(n_clips):
        own = [c for c in range(len(caption_clip)) if caption_clip[c] == i]
        for j in range(len(caption_clip)):
            cosines = [float(F.cosine_similarity(captions[c].double(), captions[j].double(), dim=0)) for c in own]
            out[i, j] = sum(cosines) / len(cosines) if cosines else 0.0
    return out


# ------------------------------------------------------------------------------------------ the math
def test_caption_similarity_is_the_mean_of_cosines_and_a_teacher_stores_it_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    caption_clip = [0, 0, 0, 1, 2, 2, 2, 2, 2, 4]  # 3, 1, 5, 0 and 1 captions
    captions = torch.randn(len(caption_clip), 7, generator=g) * 3
    reference = naive_caption_similarity(captions, caption_clip, 5)
    clip_of = torch.tensor(caption_clip)
    assert torch.allclose(caption_similarity(captions, clip_of, 5).double(), reference, atol=1e-6)
    clip_rows, caption_rows = caption_mean_embeddings(captions, clip_of, 5)
    assert clip_rows.shape == (5, 8) and torch.allclose(clip_rows.norm(dim=1), torch.ones(5), atol=1e-6)
    teacher = TeacherEmbeddings([f"c{i}" for i in range(5)], clip_rows, [f"t{j}" for j in range(10)], clip_of, caption_rows)
    loaded = TeacherEmbeddings.load(teacher.save(tmp_path / "cs.safetensors"))
    assert torch.allclose(loaded.similarity().double(), reference, atol=1e-6)  # not the cosine to the mean
    assert not torch.allclose(F.normalize(clip_rows[:, :7], dim=1).double() @ F.normalize(captions, dim=1).double().T,
                              reference, atol=1e-3)
    batch = TeacherEnsemble([loaded]).batch_similarity(torch.tensor([2, 0]), torch.tensor([9, 1, 4]))
    assert torch.allclose(batch.double(), reference[[2, 0]][:, [9, 1, 4]], atol=1e-6)


def test_mix_is_the_weighted_mean_by_hand():
    a1, c1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    a2, c2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # C1 = [[1, .6], [0, .8]], C2 = [[0, 1], [1, 0]]; weights 1 and 3 -> (C1 + 3 C2) / 4
    expected = torch.tensor([[0.25, 0.9], [0.75, 0.2]])
    ids, texts = ["x", "y"], ["p", "q"]
    ens = TeacherEnsemble([TeacherEmbeddings(ids, a1, texts, [0, 1], c1), TeacherEmbeddings(ids, a2, texts, [0, 1], c2)],
                          weights=[1, 3])
    assert torch.allclose(ens.full_similarity(), expected, atol=1e-6)
    assert torch.allclose(ens.batch_similarity(torch.tensor([1]), torch.tensor([1, 0])), expected[[1]][:, [1, 0]])
    audio, captions = combine_embeddings([a1, a2], [c1, c2], [1, 3])
    assert torch.allclose(audio @ captions.T, expected, atol=1e-6)
    assert torch.allclose(est.as_teacher(ens).similarity(), expected, atol=1e-6)
    for bad in ([1, -1], [1], [0, 1]):
        with pytest.raises(ConfigError, match="weights"):
            TeacherEnsemble(ens.teachers, weights=bad)


def test_softmax_mass_against_a_naive_reference():
    g = torch.Generator().manual_seed(1)
    sim, relevant = torch.rand(6, 4, generator=g), torch.rand(6, 4, generator=g) > 0.6
    tau = 0.05
    for j in range(4):
        denom = sum(math.exp(float(sim[i, j]) / tau) for i in range(6))
        want = sum(math.exp(float(sim[i, j]) / tau) / denom for i in range(6) if relevant[i, j])
        assert float(column_softmax_mass(sim, relevant, tau)[j]) == pytest.approx(want, abs=1e-6)


def test_measure_over_random_batches_against_a_naive_loop(split):
    n = len(split.clips)
    ens = TeacherEnsemble([random_teacher(split, 8, 0)])
    g = torch.Generator().manual_seed(2)
    relevant = torch.rand(n, len(ens.caption_texts), generator=g) > 0.8
    relevant[ens.caption_clip, torch.arange(len(ens.caption_texts))] = True  # a caption describes its clip
    got = est.measure_correspondences(ens, relevant, batch_size=8, tau=0.05, rounds=3, seed=5)
    masses, others = [], []
    for clips, caps in est._batches(ens.caption_clip, n, 8, 3, 5):
        assert len(set(clips.tolist())) == 8 and bool((ens.caption_clip[caps] == clips).all())  # own captions
        full = ens.full_similarity()
        for b, j in enumerate(caps.tolist()):
            col = torch.softmax(full[clips, j].double() / 0.05, 0)
            masses.append(float(sum(col[a] for a in range(8) if relevant[clips[a], j])))
            if any(relevant[clips[a], j] for a in range(8) if a != b):
                others.append(float(sum(col[a] for a in range(8) if a != b and relevant[clips[a], j])))
    assert got["batches"] == 3 * (n // 8)
    assert got["softmax_mass"] == pytest.approx(sum(masses) / len(masses), abs=1e-4)
    assert got["other_mass"] == pytest.approx(sum(others) / len(others), abs=1e-4)
    # the truth itself, sharp, puts all mass on relevant clips; a constant estimate gets chance
    truth = TeacherEnsemble([TeacherEmbeddings(ens.clip_ids, torch.eye(n), ens.caption_texts, ens.caption_clip,
                                               F.one_hot(ens.caption_clip, n).float())])
    perfect = est.measure_correspondences(truth, truth.full_similarity() > 0.5, batch_size=8, rounds=2)
    assert perfect["auc"] == 1.0 and perfect["softmax_mass"] > 0.99
    flat = TeacherEnsemble([TeacherEmbeddings(ens.clip_ids, torch.ones(n, 1), ens.caption_texts, ens.caption_clip,
                                              torch.ones(len(ens.caption_texts), 1))])
    chance = est.measure_correspondences(flat, relevant, batch_size=8, rounds=2)
    assert chance["auc"] == 0.5 and chance["softmax_mass"] == pytest.approx(chance["chance_mass"], abs=1e-4)


# ------------------------------------------------------------------------------------- the estimators
def test_ensemble_is_the_old_teacher_ensemble_path(split, data, tmp_path):
    paths = [random_teacher(split, d, s).save(tmp_path / f"t{s}.safetensors") for s, d in ((0, 8), (1, 5), (2, 8))]
    old = TeacherEnsemble([TeacherEmbeddings.load(p) for p in paths])
    new = est.stage2_targets([str(p) for p in paths], split, EstimatorConfig(**DEFAULTS["estimator"]))
    clips, caps = torch.tensor([3, 0, 7, 7]), torch.tensor([5, 1, 30, 2])
    assert torch.equal(new.batch_similarity(clips, caps), old.batch_similarity(clips, caps))
    one = est.write_estimate("ensemble", est.EstimateOptions(data, tmp_path / "ens.safetensors", teachers=paths,
                                                             progress=False))
    stored = TeacherEmbeddings.load(one)
    assert stored.dim == 21 and stored.meta["estimator"] == "ensemble"
    assert torch.allclose(stored.similarity(), old.full_similarity(), atol=1e-5)
    mixed = est.stage2_targets([str(p) for p in paths], split, EstimatorConfig(name="mix", weights=(2, 1, 1)))
    by_hand = (2 * old.teachers[0].similarity() + old.teachers[1].similarity() + old.teachers[2].similarity()) / 4
    assert torch.allclose(mixed.full_similarity(), by_hand, atol=1e-6)


def test_caption_similarity_estimator_on_a_tiny_split(split):
    texts, clip_of = flatten_captions(split)
    targets = est.estimate("caption-similarity", est.EstimatorInput(split, text_model="tiny-bert"))
    embs = est.embed_captions("tiny-bert", texts)
    reference = naive_caption_similarity(embs[:40], clip_of[:40], 8)  # clips 0-7 own captions 0-39
    assert torch.allclose(targets.full_similarity()[:8, :40].double(), reference, atol=1e-5)
    assert list(targets.clip_ids) == [c.clip_id for c in split.clips]
    with pytest.raises(ConfigError, match="not a text encoder"):
        est.embed_captions("no-such-text-model", texts[:2])


def test_model_estimator_with_a_tiny_random_model(split, data, tmp_path):
    from soundsift.checkpoints import load_model, save_model
    from soundsift.data.dataset import AudioStore
    from soundsift.model import DualEncoder
    from soundsift.training.embed import embed_split

    torch.manual_seed(0)
    path = save_model(DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=16), tmp_path / "m.pt")
    targets = est.estimate("model", est.EstimatorInput(split, model=str(path)))
    model = load_model(path, device="cpu")
    emb = embed_split(model, split, AudioStore(model.sample_rate, preload=False), progress=False)
    assert torch.allclose(targets.full_similarity(), emb.audio @ emb.captions.T, atol=1e-5)
    assert targets.teachers[0].meta["model_identity"] == model.identity
    # the CLI's model estimator is `soundsift teachers --model M`: the same file either way
    a = est.write_estimate("model", est.EstimateOptions(data, tmp_path / "a.safetensors", models=[str(path)],
                                                        progress=False))
    assert torch.allclose(TeacherEmbeddings.load(a).similarity(), targets.full_similarity(), atol=1e-5)
    with pytest.raises(ConfigError, match="exactly one --model"):
        est.write_estimate("model", est.EstimateOptions(data, tmp_path / "b.safetensors", models=[str(path)] * 2,
                                                        progress=False))


# ------------------------------------------------------------------------------- config and command line
def test_config_selects_an_estimator_and_names_the_known_ones(data):
    base = ["loss.distill_weight=1", "loss.loss_weight=0"]
    cfg = load_config("demo/stage2.yaml", []).to_dict()
    assert cfg["estimator"] == DEFAULTS["estimator"] and cfg["estimator"]["name"] == "ensemble"
    with pytest.raises(ConfigError) as err:
        load_config("demo/stage1.yaml", ["estimator.name=nope"])
    assert str(err.value) == ("estimator.name: unknown correspondence estimator 'nope'; known: caption-similarity, "
                              "ensemble, mix, model") and "\n" not in str(err.value)
    assert load_config("demo/stage1.yaml", [*base, "estimator=caption-similarity"]).to_dict()["estimator"]["text_model"] == "minilm"
    cfg = load_config("demo/stage2.yaml", ["estimator.name=mix", "estimator.weights=[1, 1, 2]"]).to_dict()
    assert cfg["estimator"]["weights"] == [1, 1, 2]
    for overrides, message in ((["estimator.name=mix"], "needs estimator.weights: 3 numbers"),
                               (["estimator.name=mix", "estimator.weights=[1, 2]"], "3 numbers > 0"),
                               (["estimator.weights=[1, 1, 1]"], "is for estimator.name=mix"),
                               (["estimator.name=caption-similarity"], "set teachers=\\[\\]"),
                               (["teachers=[]", "estimator.name=model"], "needs estimator.model"),
                               (["teachers=[]"], "needs at least one entry in 'teachers'")):
        with pytest.raises(ConfigError, match=message):
            load_config("demo/stage2.yaml", overrides)
    assert load_config("demo/stage2.yaml", ["teachers=[]", "estimator.name=model", "estimator.model=zero-shot"])


def test_teachers_cli_writes_an_estimate_that_stage2_trains_on(data, tmp_path, capsys):
    out = tmp_path / "cs.safetensors"
    assert main(["-q", "teachers", "--estimator", "caption-similarity", "--text-model", "tiny-bert",
                 "--data-root", str(data), "--out", str(out)]) == 0
    assert "(caption-similarity)" in capsys.readouterr().out
    assert TeacherEmbeddings.load(out).meta["text_model"] == "tiny-bert"
    mix = tmp_path / "mix.safetensors"
    assert main(["-q", "teachers", "--estimator", "mix", "--teachers", str(out), str(out), "--weights", "1", "2",
                 "--data-root", str(data), "--out", str(mix)]) == 0
    assert torch.allclose(TeacherEmbeddings.load(mix).similarity(), TeacherEmbeddings.load(out).similarity(), atol=1e-5)
    stage1 = tmp_path / "s1"
    tiny = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16",
            "optim.epochs=1", "optim.batch_size=16", "trainer.progress_bar=false", f"data.root={data}"]
    assert main(["-q", "train", "--config", "demo/stage1.yaml", *tiny, f"out_dir={stage1}"]) == 0
    assert main(["-q", "train", "--config", "demo/stage2.yaml", *tiny, f"out_dir={tmp_path / 's2'}",
                 f"init_from={stage1 / 'model.pt'}", f"teachers=[{out}]"]) == 0
    assert (tmp_path / "s2" / "model.pt").is_file()
    capsys.readouterr()
    assert main(["-q", "teachers", "--estimator", "nope", "--data-root", str(data), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown correspondence estimator 'nope'; known: caption-similarity, ensemble" in err[0]


def test_stage2_computes_caption_similarity_from_the_config(data, split):
    from soundsift.training.run import load_teachers

    config = load_config("demo/stage2.yaml", ["teachers=[]", "estimator.name=caption-similarity",
                                              "estimator.text_model=tiny-bert"])
    targets = load_teachers(config.teachers, split, config)
    direct = est.estimate("caption-similarity", est.EstimatorInput(split, text_model="tiny-bert"))
    assert torch.allclose(targets.full_similarity(), direct.full_similarity())


def test_ground_truth_is_aligned_with_a_teacher(data, split, tmp_path):
    from soundsift.data.synth.benchmark import load_ground_truth

    teacher = random_teacher(split, 4, 0)
    rel = est.ground_truth_relevance(data, "development", list(teacher.clip_ids), list(teacher.caption_texts),
                                     teacher.caption_clip)
    assert torch.equal(rel, torch.from_numpy(load_ground_truth(data, "development")["holds"]).T)
    sub = type(split)(split.name, split.clips[3:], [])  # a clip skipped: rows and columns follow the teacher
    part = random_teacher(sub, 4, 0)
    rel_sub = est.ground_truth_relevance(data, "development", list(part.clip_ids), list(part.caption_texts),
                                         part.caption_clip)
    assert torch.equal(rel_sub, rel[3:, 15:])
    assert est.ground_truth_relevance(tmp_path, "development", [], [], torch.zeros(0, dtype=torch.long)) is None


def test_estimators_recipe_orders_its_steps_and_prints_their_commands(capsys, tmp_path):
    from soundsift.training.recipe import Runner, load_recipe

    recipe = load_recipe("estimators")
    assert recipe.steps["est-zero-shot"].needs == []  # a published model, not a step
    assert recipe.steps["est-mix"].needs == ["est-ensemble", "est-caption-similarity"]
    runner = Runner(recipe, tmp_path / "out")
    assert runner.data_root == str(tmp_path / "out" / "data") and runner.generates_data()
    assert main(["reproduce", "estimators", "--print", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("soundsift synth --preset small")
    mix = next(line for line in lines if "est-mix.safetensors" in line.split("--out")[-1])
    assert "--estimator mix --teachers" in mix and "--weights 0.5 0.5" in mix
    assert any("--estimator model --model zero-shot" in line for line in lines)


def test_a_registered_estimator_is_a_plug_in(split):
    def constant(inp: est.EstimatorInput) -> TeacherEnsemble:
        texts, clip_of = flatten_captions(inp.split)
        return TeacherEnsemble([TeacherEmbeddings([c.clip_id for c in inp.split.clips], torch.ones(len(inp.split.clips), 1),
                                                  texts, clip_of, torch.ones(len(texts), 1))])

    est.register_estimator("constant", constant, reads_teachers=False)
    try:
        config = load_config("demo/stage2.yaml", ["teachers=[]", "estimator.name=constant"])
        targets = est.stage2_targets([], split, config.estimator)
        assert torch.equal(targets.full_similarity(), torch.ones(len(split.clips), len(targets.caption_texts)))
    finally:
        unregister_estimator("constant")
    with pytest.raises(ConfigError, match="unknown correspondence estimator 'constant'"):
        load_config("demo/stage2.yaml", ["teachers=[]", "estimator.name=constant"])


def test_recipe_hashes_ignore_the_default_estimator():
    from soundsift.training.recipe import _stable

    assert "estimator" not in _stable(load_config("demo/stage2.yaml", []))  # runs recorded before keep their hash
    assert _stable(load_config("demo/stage2.yaml", ["estimator.name=mix", "estimator.weights=[1, 1, 1]"]))["estimator"]
