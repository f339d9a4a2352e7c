"""The typed core: no string-key config reads outside soundsift.config, one Objective whose terms are
the loss functions', a training module usable alone in both stages, and the two findings of issue 16."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import pytest
import torch

from soundsift.cli.main import main
from soundsift.config import load_config
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble
from soundsift.data.dataset import PairBatch
from soundsift.errors import ConfigError
from soundsift.losses import contrastive_loss, distillation_loss, positives_from_ids
from soundsift.training.module import RetrievalModule
from soundsift.training.objective import Objective

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "soundsift"

# ------------------------------------------------------------------------------------- the AST rule
#: Names a config (or one of its sections, or a recipe step's spec) goes by in this code base.
CONFIG_NAMES = {"config", "cfg", "configuration", "section", "spec", "optim", "opt", "tr", "trainer", "loss_cfg",
                "data_cfg", "model_cfg", "init_cfg", "estimator", "sweep", "loss"}
#: Reads that are not of an experiment config, by file:
#: - checkpoints/, model.py: a model file's architecture record (``DualEncoder.config``, salsa's
#:   hyperparameters), the model file format's own dict;
#: - training/report.py, training/compare.py: run folders of any version, read as written (tolerant).
NOT_EXPERIMENT_CONFIGS = ("checkpoints/", "model.py", "training/report.py", "training/compare.py")


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return _root(node.func.value)
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def config_reads(source: str) -> list[str]:
    """``x["key"]`` (loaded, not assigned) and ``x.get("key")`` where x is named like a config."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str) and _root(node.value) in CONFIG_NAMES:
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and _root(node.func.value) in CONFIG_NAMES:
            found.append(ast.unparse(node))
    return found


def test_the_rule_catches_the_old_spellings():
    old = 'def f(config, spec):\n    a = config["loss"]["tau"]\n    b = spec.get("split")\n    config["x"] = 1\n'
    assert sorted(config_reads(old)) == ["config['loss']", "config['loss']['tau']", "spec.get('split')"]


def test_no_code_reads_the_config_by_string_key():
    over = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("config/") or rel.startswith(NOT_EXPERIMENT_CONFIGS):
            continue
        reads = config_reads(path.read_text(encoding="utf-8"))
        if reads:
            over[rel] = reads
    assert not over, f"read the typed config's attributes instead: {over}"


# ------------------------------------------------------------------------------------- the objective
def _teachers(n_clips: int, n_captions: int, seed: int) -> TeacherEnsemble:
    gen = torch.Generator().manual_seed(seed)
    return TeacherEnsemble([TeacherEmbeddings(
        clip_ids=[f"c{i}" for i in range(n_clips)], audio=torch.randn(n_clips, 5, generator=gen),
        caption_texts=[f"t{j}" for j in range(n_captions)], caption_clip=torch.arange(n_captions) % n_clips,
        captions=torch.randn(n_captions, 5, generator=gen)) for _ in range(2)])


@pytest.mark.parametrize("lw, dw, tau", [(1.0, 0.0, 0.05), (0.0, 1.0, 0.05), (0.25, 1.0, 0.1), (0.5, 0.5, 0.05)])
def test_objective_terms_are_the_loss_functions(lw, dw, tau):
    gen = torch.Generator().manual_seed(3)
    sim = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1)
    sim = sim @ torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1).T
    clips, captions = torch.tensor([0, 1, 2, 2, 4, 5]), torch.tensor([0, 7, 2, 8, 4, 11])  # clip 2 twice
    teachers = _teachers(6, 12, 0)
    terms = Objective(lw, dw, tau, teachers if dw else None)(sim, clips, captions)
    sup = contrastive_loss(sim, positives_from_ids(clips, clips), tau)
    dist = distillation_loss(sim, teachers.batch_similarity(clips, captions).float(), tau)
    assert set(terms) == {"total"} | ({"L_sup"} if lw else set()) | ({"L_dist"} if dw else set())
    if lw:
        torch.testing.assert_close(terms["L_sup"], sup)
    if dw:
        torch.testing.assert_close(terms["L_dist"], dist)
    # the weights enter as written (salsa's lw is squared in the config files, not here)
    torch.testing.assert_close(terms["total"], lw * sup + dw * dist)
    assert Objective(lw, dw, tau, teachers if dw else None).uses_teachers == bool(dw)


def test_objective_refuses_distillation_without_teachers():
    with pytest.raises(ConfigError, match="distill_weight > 0 needs teachers"):
        Objective(0.0, 1.0)
    with pytest.raises(ConfigError, match="nothing to train"):
        Objective(0.0, 0.0)


# ------------------------------------------------------------------------- the module on its own
TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=8",
        "optim.epochs=1", "optim.batch_size=4"]


def _one_step(module: RetrievalModule) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    batch = PairBatch(torch.randn(4, 8000, generator=gen) * 0.1, torch.full((4,), 8000), ["a", "b", "c", "d"],
                      torch.tensor([0, 1, 2, 0]), torch.tensor([0, 3, 6, 1]))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    return module.last_losses


def test_a_module_built_alone_trains_in_both_stages():
    stage1 = RetrievalModule.from_config(load_config("demo/stage1.yaml", TINY))
    assert set(_one_step(stage1)) == {"L_sup"}
    stage2 = load_config("demo/stage1.yaml", [*TINY, "loss.distill_weight=1", "loss.loss_weight=0", "teachers=[x]"])
    with pytest.raises(ConfigError, match="distill_weight > 0 needs teachers"):
        RetrievalModule.from_config(stage2)  # a clear error, not None.batch_similarity mid-training
    losses = _one_step(RetrievalModule.from_config(stage2, _teachers(3, 12, 1)))
    assert set(losses) == {"L_dist"} and losses["L_dist"] > 0


# ------------------------------------------------------------------------------------- the findings
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("typed") / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_a_frozen_text_encoder_without_cache_trains(data, tmp_path):
    # `precompute` is for frozen encoders that cache; cache: false used to end in a RuntimeError
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={tmp_path / 'r'}",
                 "model.audio_encoder={name: cnn, size: tiny}", "model.embed_dim=8", "optim.epochs=1",
                 "optim.batch_size=8", "trainer.progress_bar=false",
                 "model.text_encoder={name: tiny-bert, freeze: true, cache: false}"]) == 0
    assert (tmp_path / "r" / "model.pt").is_file()


def test_prepare_reads_the_init_model_once(data, tmp_path, monkeypatch):
    from soundsift.checkpoints import save_model
    from soundsift.model import DualEncoder
    from soundsift.training import run

    init = save_model(DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=8), tmp_path / "m.pt")
    reads = []
    real = run.read_model_file
    monkeypatch.setattr(run, "read_model_file", lambda path: reads.append(path) or real(path))
    config = load_config("demo/stage1.yaml", [*TINY, f"data.root={data}", f"out_dir={tmp_path / 'r'}",
                                              f"init_from={init}"])
    prepared = run.prepare(config, progress=False)
    assert reads == [str(init)]
    assert prepared.config.model.to_dict()["audio_encoder"] == {"name": "cnn", "size": "tiny"}
