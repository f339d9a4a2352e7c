"""``soundsift reproduce dcase2025``: the DCASE 2025 task 6 baseline's settings, its printed steps in
dependency order, and every config resolving and dry-running without pretrained weights."""

from pathlib import Path

import pytest

from soundsift.cli.main import main
from soundsift.config import load_config
from soundsift.training.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "soundsift" / "configs" / "dcase2025"
NAMES = ("clotho", "clotho-audiocaps", "clotho-audiocaps-wavcaps", "stage2-ensemble")
TINY_TEXT = "{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"


def test_print_lists_the_steps_in_dependency_order(capsys):
    assert main(["reproduce", "dcase2025", "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["train"] * 3 + ["teachers"] * 3 + ["train"]
    for i, name in enumerate(NAMES[:3]):
        assert f"dcase2025/{name}.yaml" in lines[i] and f"out_dir=runs/dcase2025/{name}" in lines[i]
        assert f"--model runs/dcase2025/{name}/model.pt" in lines[3 + i] and "--split development" in lines[3 + i]
    last = lines[-1]
    assert "dcase2025/stage2-ensemble.yaml" in last and "init_from=runs/dcase2025/clotho-audiocaps-wavcaps/model.pt" in last
    assert last.count(".safetensors") == 3  # M = 3: the three baseline models
    recipe = load_recipe("dcase2025")
    assert recipe.steps["stage2-ensemble"].needs == ["clotho-audiocaps-wavcaps", "teachers-clotho",
                                                     "teachers-clotho-audiocaps", "teachers-clotho-audiocaps-wavcaps"]
    assert recipe.steps["clotho"].expected["baseline"] == {"mAP@16": 32.82, "mAP@10": 27.83, "R@1": 16.95,
                                                           "R@5": 42.46, "R@10": 55.80}


@pytest.mark.parametrize("name", NAMES)
def test_configs_hold_the_baselines_settings(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    o, t, d = cfg.optim, cfg.model.text_encoder.options, cfg.data
    assert (o.optimizer, o.lr, o.min_lr, o.weight_decay, tuple(o.betas), o.eps) == ("adamw", 2e-5, 1e-7, 0.0, (0.9, 0.999), 1e-8)
    assert (o.epochs, o.warmup_epochs, o.decay_epochs, o.batch_size) == (20, 1, 16, 64)
    assert cfg.trainer.precision == "16-mixed" and cfg.trainer.eval_batch_size == 64
    assert cfg.loss.tau == 0.05 and cfg.model.embed_dim == 1024
    assert (t["model"], t["pooling"], t["max_tokens"], t["dropout"]) == ("roberta-large", "cls", 32, 0.2)
    assert t["lowercase"] and t["strip_punctuation"]
    audio = cfg.model.audio_encoder.options
    assert cfg.model.audio_encoder.name == "passt" and audio["segment_seconds"] == 10
    assert (audio["s_patchout_t"], audio["s_patchout_f"]) == (15, 2)
    assert d.relevance == "relevance_evaluation.csv" and d.max_seconds == 30 and d.captions_per_epoch == "all"
    extra = {e.format: e for e in d.extra_train}
    expected = {"clotho": set(), "clotho-audiocaps": {"audiocaps"}, "stage2-ensemble": set()}  # stage 2: ClothoV2
    assert set(extra) == expected.get(name, {"audiocaps", "wavcaps"})
    if "wavcaps" in extra:
        assert extra["wavcaps"].exclude_ids == "dcase2025_task6_excluded_freesound_ids.csv"
    if name == "stage2-ensemble":
        assert len(cfg.teachers) == 3 and (cfg.loss.loss_weight, cfg.loss.distill_weight) == (0.0, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_config_dry_runs_without_pretrained_weights(name, capsys):
    # the configs' own towers at a tiny size: PaSST's tiny variant and RoBERTa's layout shrunk
    assert main(["-q", "train", "--config", f"dcase2025/{name}.yaml", "--dry-run", "--no-pretrained",
                 "model.audio_encoder.size=tiny", f"model.text_encoder.config_overrides={TINY_TEXT}"]) == 0
    out = capsys.readouterr().out
    assert "finite: True" in out and "cosine to 1e-07 at epoch 16" in out and "precision: 16-mixed" in out
