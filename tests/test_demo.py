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


def test_demo_writes_table1_layout(tmp_path):
    summary = run_demo(tmp_path, seed=3, preset="tiny", overrides=TINY, progress=False, control=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == summary["rows"] and saved["seconds"] > 0
    rows = saved["rows"]
    assert [(r["encoder"], r["variant"]) for r in rows] == [
        (e, v) for e in ("cnn", "patchformer", "crnn")
        for v in ("stage1", "stage2-ensemble", "stage2-self", "stage2-sup")
    ]
    for row in rows:
        assert all(0 <= row[c] <= 100 for c in COLUMNS)
        assert row["R@1"] <= row["R@5"] <= row["R@10"]
        assert load_model(row["checkpoint"]).audio.out_dim > 0
    # stage 2 starts from stage 1 and learns from M=3 (ensemble) or M=1 (self) teachers
    cfg = (tmp_path / "stage2-ensemble-crnn" / "config.yaml").read_text()
    assert "stage1-crnn" in cfg and cfg.count(".safetensors") == 3
    assert (tmp_path / "stage2-self-cnn" / "config.yaml").read_text().count(".safetensors") == 1
    auc = saved["correspondence_auc"]
    assert set(auc) == {"cnn", "patchformer", "crnn", "ensemble"} and all(0 <= v <= 1 for v in auc.values())
    table = (tmp_path / "results.md").read_text()
    assert format_table(rows) in table and table.count("| crnn |") == 4
