"""The declared encoder contract: each capability with its default and the encoders that override it,
the one no-download option of every family, and options checked against each family's dataclass."""

from __future__ import annotations

import dataclasses
import inspect
import socket

import pytest
import torch

from soundsift.encoders import (
    AudioEncoder,
    TextEncoder,
    build_audio_encoder,
    build_text_encoder,
)
from soundsift.encoders.registry import AUDIO_ENCODERS, TEXT_ENCODERS, random_weights, upgrade_options
from soundsift.encoders.text import minilm_path
from soundsift.errors import ConfigError
from soundsift.model import DualEncoder


class Bare(AudioEncoder):
    sample_rate, out_dim = 16000, 2

    def forward(self, waveform, lengths=None):
        return waveform[:, :2]


class BareText(TextEncoder):
    out_dim = 2


def builtin(registry) -> list[str]:
    """soundsift's own encoder names (not those other test modules register)."""
    return [n for n in registry.names() if registry.get(n).__module__.startswith("soundsift.")]


# ------------------------------------------------------------------ capabilities and their defaults


def test_batch_invariant_defaults_to_false_and_is_declared_by_the_encoders_that_hold_it():
    assert Bare().batch_invariant is False
    declared = {n for n in builtin(AUDIO_ENCODERS) if AUDIO_ENCODERS.get(n).__dict__.get("batch_invariant") is True
                or any(c.__dict__.get("batch_invariant") is True for c in AUDIO_ENCODERS.get(n).__mro__[1:-1])}
    assert declared == {"passt", "mn", "atst", "yamnet", "yamnet-bridge", "ast", "clap", "laion-clap"}
    for name in ("cnn", "crnn", "patchformer"):  # a property: invariant with their default front end
        assert build_audio_encoder(name, size="tiny").batch_invariant is True


def test_freeze_defaults_to_false_and_text_encoders_set_it():
    assert Bare().freeze is False and BareText().freeze is False
    assert build_text_encoder("tiny-bert").freeze is False
    assert build_text_encoder("tiny-bert", freeze=True).freeze is True
    assert build_text_encoder("laion-clap", tiny=True).freeze is True  # frozen by default


def test_precompute_is_declared_and_only_a_frozen_cached_encoder_can():
    assert BareText().can_precompute is False
    with pytest.raises(NotImplementedError, match="cannot precompute"):
        BareText().precompute(["a dog"])
    assert build_text_encoder("tiny-bert", freeze=True).can_precompute is True
    assert build_text_encoder("tiny-bert", freeze=True, cache=False).can_precompute is False
    assert build_text_encoder("tiny-bert").can_precompute is False
    assert build_text_encoder("laion-clap", tiny=True).can_precompute is True
    assert build_text_encoder("yamnet-classes", tiny=True).can_precompute is False  # its unfrozen tiny BERT


def test_frozen_pretrained_defaults_to_false_and_frozen_pretrained_towers_declare_it():
    assert Bare().frozen_pretrained is False and BareText().frozen_pretrained is False
    assert build_text_encoder("minilm").backbone.frozen_pretrained is True
    assert build_text_encoder("minilm", pretrained=False).backbone.frozen_pretrained is False  # nothing to rebuild


def test_upgrade_state_dict_defaults_to_no_change_and_patchformer_renames_old_keys():
    state = {"audio.blocks.0.attn.qkv.weight": torch.zeros(1)}
    assert Bare().upgrade_state_dict(state, "audio.") == state
    upgraded = build_audio_encoder("patchformer", size="tiny").upgrade_state_dict(
        {"audio.blocks.0.mlp.0.weight": torch.zeros(1)}, "audio.")
    assert list(upgraded) != ["audio.blocks.0.mlp.0.weight"]


def test_identity_and_meta_are_declared_on_the_model(tmp_path):
    from soundsift.checkpoints import load_model, save_model

    model = DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=4)
    assert model.identity is None and model.meta == {}  # declared before anything loads it
    loaded = load_model(save_model(model, tmp_path / "m.pt", meta={"a": 1}), device="cpu")
    assert len(loaded.identity) == 64 and loaded.meta == {"a": 1}


def test_the_registry_refuses_an_encoder_outside_the_contract():
    from soundsift.encoders import register_audio_encoder

    register_audio_encoder("contract-test-plain-module", torch.nn.Identity)
    with pytest.raises(TypeError, match="not a soundsift.encoders.AudioEncoder"):
        build_audio_encoder("contract-test-plain-module")


# ------------------------------------------------------------------------- one no-download option


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (and is recorded)."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


SIZES = {"cnn": {"size": "tiny"}, "crnn": {"size": "tiny"}, "patchformer": {"size": "tiny"}, "passt": {"size": "tiny"},
         "mn": {"size": "tiny"}, "atst": {"size": "tiny"}, "yamnet": {"width": 0.125},
         "hf": {"model": "MINILM", "config_overrides": {"num_hidden_layers": 1}}}


@pytest.mark.parametrize("name", [n for n in builtin(AUDIO_ENCODERS) if n != "laion-clap"])
def test_every_audio_family_builds_without_network_with_pretrained_false(name, no_network):
    encoder = build_audio_encoder(name, pretrained=False, **SIZES.get(name, {}))
    assert isinstance(encoder, AudioEncoder) and encoder.out_dim > 0 and not no_network
    assert encoder.frozen_pretrained is False  # random weights are saved, never "rebuilt from the source"


@pytest.mark.parametrize("name", [n for n in builtin(TEXT_ENCODERS) if n != "laion-clap"])
def test_every_text_family_builds_without_network_with_pretrained_false(name, no_network):
    options = {k: (minilm_path() if v == "MINILM" else v) for k, v in SIZES.get(name, {}).items()}
    encoder = build_text_encoder(name, pretrained=False, **options)
    assert isinstance(encoder, TextEncoder) and encoder(["a dog barks"]).shape == (1, encoder.out_dim)
    assert not no_network


@pytest.mark.parametrize("build, name, options", [
    (build_audio_encoder, "ast", {}),
    (build_audio_encoder, "clap", {}),
    (build_text_encoder, "hf", {"model": "MINILM", "config_overrides": {"num_hidden_layers": 1}}),
])
def test_the_old_spelling_random_init_builds_the_same_encoder(build, name, options):
    options = {k: (minilm_path() if v == "MINILM" else v) for k, v in options.items()}
    torch.manual_seed(0)
    old = build(name, random_init=True, **options).state_dict()
    torch.manual_seed(0)
    new = build(name, pretrained=False, **options).state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_old_spellings_map_to_pretrained_and_configs_keep_what_they_say():
    assert upgrade_options({"random_init": True}) == {"pretrained": False, "local_files_only": False}
    assert upgrade_options({"random_init": False, "local_files_only": True}) == {"pretrained": True,
                                                                                  "local_files_only": True}
    with pytest.raises(ConfigError, match="random_init: true contradicts pretrained: true"):
        upgrade_options({"random_init": True, "pretrained": True})
    spec = {"name": "hf", "model": minilm_path(), "random_init": True, "config_overrides": {"num_hidden_layers": 1}}
    model = DualEncoder({"name": "cnn", "size": "tiny"}, spec, embed_dim=4)
    assert model.config["text_encoder"] == spec  # model files and config.yaml keep the spelling as written
    assert random_weights({"name": "hf", "random_init": False, "local_files_only": False}) == {"name": "hf",
                                                                                                "pretrained": False}


def test_a_family_without_published_weights_refuses_pretrained_true():
    with pytest.raises(ConfigError, match="model.audio_encoder.pretrained"):
        build_audio_encoder("cnn", size="tiny", pretrained=True)
    with pytest.raises(ConfigError, match="no published weights"):
        type(build_audio_encoder("cnn", size="tiny"))(size="tiny", pretrained=True)


# ------------------------------------------------------------------------------- options validation


@pytest.mark.parametrize("tower, spec, message", [
    ("audio_encoder", {"name": "cnn", "size": "tiny", "chanels": [4, 8]}, r"model\.audio_encoder\.chanels: not an option of the 'cnn' encoder"),
    ("audio_encoder", {"name": "cnn", "dropout": "lots"}, r"model\.audio_encoder\.dropout: .*number.*'lots'"),
    ("audio_encoder", {"name": "patchformer", "patch": [16, "x"]}, r"model\.audio_encoder\.patch\.1: .*integer"),
    ("audio_encoder", {"name": "passt", "size": "tiny", "pretrained": "maybe"}, r"model\.audio_encoder\.pretrained: .*bool"),
    ("text_encoder", {"name": "tiny-bert", "max_tokens": "many"}, r"model\.text_encoder\.max_tokens: .*integer"),
    ("text_encoder", {"name": "minilm", "pooling_mode": "mean"}, r"model\.text_encoder\.pooling_mode: not an option"),
])
def test_options_are_checked_against_the_family_and_errors_name_the_key(tower, spec, message):
    specs = {"audio_encoder": {"name": "cnn", "size": "tiny"}, "text_encoder": "tiny-bert", tower: spec}
    with pytest.raises(ConfigError, match=message) as info:
        DualEncoder(**specs, embed_dim=4)
    assert "\n" not in str(info.value)


def test_checked_options_reach_the_encoder_converted():
    assert build_audio_encoder("patchformer", size="tiny", patch=[16, 16]).patch == (16, 16)


@pytest.mark.parametrize("registry", [AUDIO_ENCODERS, TEXT_ENCODERS], ids=["audio", "text"])
def test_each_familys_options_are_its_constructors_parameters(registry):
    for name in builtin(registry):
        cls = registry.get(name)
        assert cls.Options is not None and dataclasses.is_dataclass(cls.Options), name
        assert cls.Options.__dataclass_params__.frozen, name
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        params, takes_more = set(), False
        for klass in cls.__mro__:  # MiniLM and tiny-bert pass **kw on to HFTextEncoder
            if "__init__" not in klass.__dict__ or klass in (AudioEncoder, TextEncoder, torch.nn.Module):
                continue
            signature = inspect.signature(klass.__init__).parameters.values()
            params |= {p.name for p in signature if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}
            takes_more = any(p.kind is p.VAR_KEYWORD for p in signature)
            if not takes_more:
                break
        assert fields == params, (name, fields ^ params)


@pytest.mark.slow
def test_training_with_a_frozen_text_encoder_without_cache_does_not_precompute(tmp_path):
    """The issue's traceback: precompute was called on any frozen encoder that had the method."""
    from soundsift.cli.main import main

    data, out = tmp_path / "synth", tmp_path / "run"
    assert main(["-q", "synth", "--preset", "tiny", "--seed", "0", "--out", str(data)]) == 0
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={out}",
                 "model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert, freeze: true, "
                 "cache: false}", "model.embed_dim=16", "optim.epochs=1", "optim.batch_size=16",
                 "trainer.progress_bar=false"]) == 0
    assert (out / "model.pt").is_file()
