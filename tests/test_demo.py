"""The demo's orchestration and output format, at tiny size (the real demo is `make demo`)."""

import json

import pytest

from soundsift.checkpoints import load_model
from soundsift.training.demo import COLUMNS, format_table, run_demo

pytestmark = pytest.mark.slow

TINY = (
    "model.audio_encoder.size=tiny",
    "model.text_encoder={name: tiny-bert}",
    "model.embed_dim=16",
    "optim.epochs=1",
    "trainer.progress_bar=false",
)
VARIANTS = ("stage1", "stage2-ensemble", "stage2-self", "stage2-sup")


def test_demo_writes_table1_layout_with_the_control_and_both_metrics_per_seed_and_pooled(tmp_path):
    summary = run_demo(tmp_path, preset="tiny", overrides=TINY, progress=False, seeds=(3, 4))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_seed"] == json.loads(json.dumps(summary["per_seed"])) and saved["seconds"] > 0
    assert [b["seed"] for b in saved["per_seed"]] == [3, 4] and saved["control"] is True
    for block in saved["per_seed"]:
        rows = block["rows"]
        assert [(r["encoder"], r["variant"]) for r in rows] == [
            (e, v) for e in ("cnn", "patchformer", "crnn") for v in VARIANTS]  # the control by default
        for row in rows:
            assert all(0 <= row[c] <= 100 for c in COLUMNS) and "mAP@16" in COLUMNS
            assert row["R@1"] <= row["R@5"] <= row["R@10"]
            assert load_model(row["checkpoint"]).audio.out_dim > 0
            gains = row["gains"]
            if row["variant"] == "stage1":
                assert gains == {}
            else:  # over stage 1, and (but for the control itself) over the control, both metrics
                refs = {"stage1"} if row["variant"] == "stage2-sup" else {"stage1", "control"}
                assert set(gains) == refs and all(set(g) == {"mAP@10", "mAP@16"} for g in gains.values())
                assert all(low <= diff <= high for g in gains.values() for diff, low, high in g.values())
        auc = block["correspondence_auc"]
        assert set(auc) == {"cnn", "patchformer", "crnn", "ensemble"} and all(0 <= v <= 1 for v in auc.values())
    seed3 = tmp_path / "seed-3"
    cfg = (seed3 / "stage2-ensemble-crnn" / "config.yaml").read_text()
    assert "stage1-crnn" in cfg and cfg.count(".safetensors") == 3 and "relevance: relevance_evaluation.csv" in cfg
    assert (seed3 / "stage2-self-cnn" / "config.yaml").read_text().count(".safetensors") == 1
    assert "test_multi" in json.loads((seed3 / "stage1-cnn" / "metrics.json").read_text())
    pooled = saved["pooled"]
    assert len(pooled) == 12 and all("mAP@16" in row for row in pooled)
    first = [r for r in pooled if r["variant"] == "stage2-ensemble"][0]
    per_seed = [[r for r in b["rows"] if (r["encoder"], r["variant"]) == ("cnn", "stage2-ensemble")][0]
                for b in saved["per_seed"]]
    assert first["mAP@10"] == pytest.approx(sum(r["mAP@10"] for r in per_seed) / 2, abs=0.006)
    table = (tmp_path / "results.md").read_text()
    assert format_table(pooled) in table and "## seed 4" in table and "Δ mAP@16 vs control" in table
