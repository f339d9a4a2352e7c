import math

import pytest

from soundsift.config import DEFAULTS, apply_overrides, load_config, merge
from soundsift.errors import ConfigError
from soundsift.training.module import warmup_cosine


def test_overrides_parse_yaml_values_and_nested_keys():
    cfg = apply_overrides(DEFAULTS, ["optim.lr=0.5", "data.root=/x y", "teachers=[a, b]", "seed=3"])
    assert cfg["optim"]["lr"] == 0.5
    assert cfg["data"]["root"] == "/x y"
    assert cfg["teachers"] == ["a", "b"]
    assert cfg["seed"] == 3
    assert DEFAULTS["optim"]["lr"] == 2e-5  # defaults untouched


def test_encoder_spec_is_replaced_not_merged():
    cfg = merge(DEFAULTS, {"model": {"audio_encoder": {"name": "crnn", "size": "tiny"}}})
    cfg = merge(cfg, {"model": {"audio_encoder": {"name": "cnn"}}})
    assert cfg["model"]["audio_encoder"] == {"name": "cnn"}


def test_packaged_demo_configs_load_and_stage2_inherits_stage1(tmp_path):
    s1 = load_config("demo/stage1.yaml").to_dict()
    s2 = load_config("demo/stage2.yaml").to_dict()
    assert s1["loss"]["distill_weight"] == 0 and s1["loss"]["loss_weight"] == 1
    assert s2["loss"]["distill_weight"] == 1 and s2["loss"]["loss_weight"] == 0
    assert len(s2["teachers"]) == 3
    assert s2["data"] == s1["data"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["bogus=1"], "unknown config keys"),
        (["optim.lr_typo=1"], "unknown keys in 'optim'"),
        (["loss.tau=0"], "tau"),
        (["loss.distill_weight=1"], "teachers"),
        (["loss.loss_weight=0"], "nothing to train"),
        (["noequals"], "key.sub=value"),
    ],
)
def test_bad_configs_are_refused_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def naive_schedule(step, warmup, total, lo):
    # written out independently: linear ramp (step+1)/warmup, then half-cosine from 1 to lo
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / (total - warmup)
    t = min(t, 1.0)
    return lo + (1 - lo) * (1 + math.cos(math.pi * t)) / 2


def test_warmup_cosine_matches_reference_and_endpoints():
    warmup, total, lo = 7, 50, 0.005
    for step in range(total + 3):
        assert warmup_cosine(step, warmup, total, lo) == pytest.approx(naive_schedule(step, warmup, total, lo))
    assert warmup_cosine(warmup - 1, warmup, total, lo) == pytest.approx(1.0)
    assert warmup_cosine(warmup, warmup, total, lo) == pytest.approx(1.0)
    assert warmup_cosine(total, warmup, total, lo) == pytest.approx(lo)
    assert warmup_cosine(0, 0, 10, 0.0) == pytest.approx(1.0)  # no warm-up
