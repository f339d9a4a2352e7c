"""salsa checkpoint conversion (tiny models in salsa's exact key layout; full size on the meta device)
and Hugging Face layout save/load."""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import json
import re
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from soundsift.checkpoints import detect_format, from_pretrained, save_model, save_pretrained
from soundsift.checkpoints.salsa import (
    SALSA_CONFIG,
    SALSA_IGNORED,
    convert_salsa_state_dict,
    download_salsa_checkpoint,
    load_salsa_checkpoint,
    read_lightning_checkpoint,
    salsa_config,
)
from soundsift.encoders import TextEncoder, register_text_encoder
from soundsift.encoders.pretrained import load_state_dict_checked
from soundsift.errors import ModelFileError, StateDictError
from soundsift.model import DualEncoder

TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY = {"audio_encoder": {"size": "tiny"}, "text_encoder": {"config_overrides": TINY_TEXT}}
# salsa's hyperparameters as its Sacred config stores them (experiments/ex_dcase24.py default_config),
# with a 16-d shared space to keep the test model tiny.
HPARAMS = {
    "audio_features": {"model": "passt", "segment_length": 10, "hop_length": 10, "adopt_n_layers": 0,
                       "model_config": {"s_patchout_t": 15, "s_patchout_f": 2, "freqm": 0, "timem": 0},
                       "sequence_model": {"num_layers": 0, "dim": 768}, "aggregate": "mean"},
    "sentence_features": {"model": "roberta-large", "adopt_n_layers": 0, "use_first_token": True,
                          "max_sentence_tokens": 32, "remove_punctuation": True},
    "shared_representation_size": 16, "initial_tau": 0.05, "normalize": True, "distill_from": [],
}
OURS_TO_SALSA = (  # written independently of SALSA_KEY_MAP: the inverse it must agree with
    ("audio.model.", "audio_embedding_model.model.model."),
    ("text.backbone.", "sentence_embedding_model."),
    ("audio_proj.", "project_audio.0."),
    ("text_proj.", "project_sentence.0."),
)
CAPTIONS = ["A dog barks, twice!", "rain falls on a tin roof", "Birds chirp; a car passes by."]


def to_salsa_layout(model: DualEncoder) -> dict[str, torch.Tensor]:
    """The model's weights under salsa's key names, plus the extra tensors salsa's module holds."""
    out = {}
    for key, value in model.state_dict().items():
        ours, theirs = next(pair for pair in OURS_TO_SALSA if key.startswith(pair[0]))
        out[theirs + key[len(ours):]] = value.clone()
    d, p = model.audio.out_dim, "audio_embedding_model.model.model."
    g = torch.Generator().manual_seed(1)
    out.update({
        p + "head.0.weight": torch.ones(d), p + "head.0.bias": torch.zeros(d),
        p + "head.1.weight": torch.randn(527, d, generator=g), p + "head.1.bias": torch.zeros(527),
        p + "head_dist.weight": torch.randn(527, d, generator=g), p + "head_dist.bias": torch.zeros(527),
        "tau": torch.tensor([0.05]), "timing_tau": torch.tensor([0.05]),
        "audio_token": torch.randn(1, 1, d, generator=g), "posencode.pe": torch.randn(1, 192, d, generator=g),
        "posencode.w": torch.ones(1),
    })
    return out


def lightning_ckpt(state_dict, hparams=HPARAMS) -> dict:
    return {"epoch": 7, "global_step": 4242, "pytorch-lightning_version": "2.2.2", "state_dict": state_dict,
            "hyper_parameters": hparams, "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 8}}}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
                                  "param_groups": [{"lr": 2e-5, "params": [0]}]}],
            "lr_schedulers": [], "callbacks": {"ModelCheckpoint{'monitor': 'mAP@10'}": {"best_model_score": None}}}


@pytest.fixture(scope="module")
def source_model() -> DualEncoder:
    model = DualEncoder.from_config(_tiny_config())
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():  # move every weight away from the seeded init, so only a real load reproduces it
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=g) * 0.05)
    return model.eval()


def _tiny_config() -> dict:
    config = salsa_config(HPARAMS)
    config["audio_encoder"]["size"] = "tiny"
    config["text_encoder"]["config_overrides"] = dict(TINY_TEXT)
    return config


@pytest.fixture(scope="module")
def salsa_state(source_model) -> dict[str, torch.Tensor]:
    return to_salsa_layout(source_model)


@pytest.fixture(scope="module")
def waveforms() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(48000).astype(np.float32) * 0.1, rng.standard_normal(40000).astype(np.float32)]


def _save(tmp_path: Path, state, hparams=HPARAMS, name="salsa.ckpt") -> Path:
    path = tmp_path / name
    torch.save(lightning_ckpt(state, hparams), path)
    return path


def _load(path: Path, **kw) -> DualEncoder:
    return load_salsa_checkpoint(path, overrides=TINY, check_tokenizer=False, **kw)


# ------------------------------------------------------------------------------------------- salsa


def test_salsa_checkpoint_reproduces_embeddings(tmp_path, source_model, salsa_state, waveforms):
    path = _save(tmp_path, salsa_state)
    model = _load(path)
    assert not model.training
    np.testing.assert_array_equal(model.embed_texts(CAPTIONS), source_model.embed_texts(CAPTIONS))
    np.testing.assert_array_equal(model.embed_waveforms(waveforms), source_model.embed_waveforms(waveforms))
    assert model.identity == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.meta["epoch"] == 7 and model.meta["global_step"] == 4242
    salsa_prefixes = tuple(theirs for _, theirs in OURS_TO_SALSA)
    extras = {k for k in salsa_state if not k.startswith(salsa_prefixes) or ".head" in k}
    assert len(extras) == 11 and sorted(model.meta["ignored_keys"]) == sorted(extras)
    assert model.load_report.ok and model.load_report.loaded == len(model.state_dict())
    assert model.config["text_encoder"]["max_tokens"] == 32 and model.config["text_encoder"]["pooling"] == "cls"


def test_salsa_tau_comes_from_the_checkpoint(tmp_path, salsa_state):
    from soundsift.model import DEFAULT_TAU

    assert _load(_save(tmp_path, {**salsa_state, "tau": torch.tensor([-0.03])})).tau == pytest.approx(0.03)
    without = {k: v for k, v in salsa_state.items() if k != "tau"}
    assert _load(_save(tmp_path, without, {**HPARAMS, "initial_tau": 0.04}, "b.ckpt")).tau == pytest.approx(0.04)
    assert _load(_save(tmp_path, without, {k: v for k, v in HPARAMS.items() if k != "initial_tau"}, "c.ckpt")).tau == DEFAULT_TAU


def test_sacred_containers_and_unknown_objects_in_hparams_load_without_their_code(
    tmp_path, monkeypatch, salsa_state
):
    """salsa's Sacred config holds ReadOnlyDict/ReadOnlyList (pickled as ``cls((plain copy,))``)."""
    path = tmp_path / "sacred.ckpt"
    with monkeypatch.context() as m:
        mod = types.ModuleType("sacred.config.custom_containers")

        class ReadOnlyDict(dict):
            def __reduce__(self):
                return type(self), ({**self},)

        class ReadOnlyList(list):
            def __reduce__(self):
                return type(self), ([*self],)

        class RunInfo:  # an arbitrary object with state: NEWOBJ + BUILD in the pickle
            pass

        for cls in (ReadOnlyDict, ReadOnlyList, RunInfo):
            cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
            setattr(mod, cls.__name__, cls)
        for name in ("sacred", "sacred.config"):
            m.setitem(sys.modules, name, types.ModuleType(name))
        m.setitem(sys.modules, mod.__name__, mod)
        info = RunInfo()
        info.host = "gpu-node-3"
        hp = ReadOnlyDict({**HPARAMS, "sentence_features": ReadOnlyDict(HPARAMS["sentence_features"]),
                           "distill_from": ReadOnlyList(["a", "b"]), "run": info})
        torch.save(lightning_ckpt(salsa_state, hp), path)
    assert "sacred" not in sys.modules or not hasattr(sys.modules["sacred"], "config")
    ckpt = read_lightning_checkpoint(path)
    assert type(ckpt.hparams["sentence_features"]) is dict
    assert ckpt.hparams["sentence_features"]["max_sentence_tokens"] == 32
    assert ckpt.hparams["distill_from"] == ["a", "b"]
    assert ckpt.hparams["run"].state == {"host": "gpu-node-3"}  # inert placeholder, no code of its class ran
    assert set(ckpt.state_dict) == set(salsa_state)
    assert detect_format(path) == "salsa"


@pytest.mark.parametrize(
    "extra", ["audio_embedding_model.model.model.blocks.0.attn.rel_bias", "teacher.project_audio.0.weight"]
)
def test_unknown_key_is_refused_by_name(tmp_path, salsa_state, extra):
    path = _save(tmp_path, {**salsa_state, extra: torch.zeros(3)})
    with pytest.raises(StateDictError) as err:
        _load(path)
    assert extra.replace("audio_embedding_model.model.model.", "audio.model.") in str(err.value)


def test_missing_key_is_refused_by_name(tmp_path, salsa_state):
    state = {k: v for k, v in salsa_state.items() if k != "project_sentence.0.bias"}
    with pytest.raises(StateDictError, match=r"missing.*text_proj\.bias"):
        _load(_save(tmp_path, state))


def test_shape_mismatch_is_refused(tmp_path, salsa_state):
    state = {**salsa_state, "project_audio.0.weight": torch.zeros(16, 31)}
    with pytest.raises(StateDictError, match=r"shape mismatch.*audio_proj\.weight.*\(16, 31\)"):
        _load(_save(tmp_path, state))


def test_non_strict_loads_what_fits_and_reports(tmp_path, salsa_state):
    model = _load(_save(tmp_path, {**salsa_state, "extra.weight": torch.zeros(2)}), strict=False)
    assert model.load_report.unexpected == ["extra.weight"] and not model.load_report.missing


def test_sequence_model_checkpoint_is_refused(tmp_path, salsa_state):
    state = {**salsa_state, "audio_sequence.0.linear1.weight": torch.zeros(4, 4)}
    with pytest.raises(StateDictError, match="transformer over snippet embeddings"):
        _load(_save(tmp_path, state))


def test_mismatched_tokenizer_is_refused(tmp_path, salsa_state):
    """Offline, roberta-large's tokenizer is replaced by MiniLM's (30522 tokens vs 50265 rows)."""
    with pytest.raises(ModelFileError, match=r"tokenizer has 30522 tokens .* 50265 rows"):
        load_salsa_checkpoint(_save(tmp_path, salsa_state), overrides=TINY)


def test_salsa_config_from_hyperparameters():
    assert salsa_config() == {
        "audio_encoder": {"name": "passt", "variant": "passt_s_p16_s16_128_ap468", "pretrained": False},
        "text_encoder": {"name": "hf", "model": "roberta-large", "pooling": "cls", "max_tokens": 32,
                         "random_init": True},
        "embed_dim": 1024, "audio_projection": "linear", "text_projection": "linear",
    }
    hp = copy.deepcopy(HPARAMS)
    hp["audio_features"]["model"] = "passt_s"
    hp["sentence_features"]["max_sentence_tokens"] = 48
    config = salsa_config(hp)
    assert config["audio_encoder"]["variant"] == "passt_s_kd_p16_128_ap486"
    assert config["text_encoder"]["max_tokens"] == 48 and config["embed_dim"] == 16
    hp["audio_features"]["sequence_model"]["num_layers"] = 2
    hp["sentence_features"]["adopt_n_layers"] = 1
    with pytest.raises(ValueError, match=r"snippet embeddings.*|adopt_n_layers"):
        salsa_config(hp)
    with pytest.raises(ValueError, match="audio model 'atst'"):
        salsa_config({"audio_features": {"model": "atst"}})


def real_salsa_shapes() -> dict[str, tuple[int, ...]]:
    """The published checkpoint's state dict as salsa's code builds it (PaSST-S p16 s16, roberta-large)."""
    p, r, d, h = "audio_embedding_model.model.model.", "sentence_embedding_model.", 768, 1024
    shapes = {p + "cls_token": (1, 1, d), p + "dist_token": (1, 1, d), p + "new_pos_embed": (1, 2, d),
              p + "freq_new_pos_embed": (1, d, 8, 1), p + "time_new_pos_embed": (1, d, 1, 62),  # 128x1000 / 16
              p + "patch_embed.proj.weight": (d, 1, 16, 16), p + "patch_embed.proj.bias": (d,),
              p + "norm.weight": (d,), p + "norm.bias": (d,), p + "head.0.weight": (d,), p + "head.0.bias": (d,),
              p + "head.1.weight": (527, d), p + "head.1.bias": (527,),
              p + "head_dist.weight": (527, d), p + "head_dist.bias": (527,)}
    vit = {"norm1": (d,), "attn.qkv": (3 * d, d), "attn.proj": (d, d), "norm2": (d,),
           "mlp.fc1": (4 * d, d), "mlp.fc2": (d, 4 * d)}
    for i in range(12):
        for name, shape in vit.items():
            shapes[f"{p}blocks.{i}.{name}.weight"], shapes[f"{p}blocks.{i}.{name}.bias"] = shape, shape[:1]
    shapes |= {r + "embeddings.word_embeddings.weight": (50265, h), r + "embeddings.position_embeddings.weight": (514, h),
               r + "embeddings.token_type_embeddings.weight": (1, h), r + "embeddings.LayerNorm.weight": (h,),
               r + "embeddings.LayerNorm.bias": (h,)}
    bert = {"attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
            "attention.output.dense": (h, h), "attention.output.LayerNorm": (h,),
            "intermediate.dense": (4 * h, h), "output.dense": (h, 4 * h), "output.LayerNorm": (h,)}
    for i in range(24):
        for name, shape in bert.items():
            shapes[f"{r}encoder.layer.{i}.{name}.weight"], shapes[f"{r}encoder.layer.{i}.{name}.bias"] = shape, shape[:1]
    return shapes | {"project_audio.0.weight": (h, d), "project_audio.0.bias": (h,),
                     "project_sentence.0.weight": (h, h), "project_sentence.0.bias": (h,),
                     "tau": (1,), "timing_tau": (1,), "audio_token": (1, 1, d), "posencode.pe": (1, 192, d),
                     "posencode.w": (1,)}


def test_full_size_key_set_matches_the_published_layout():
    real = {k: torch.empty(s, device="meta") for k, s in real_salsa_shapes().items()}
    assert len(real) == 15 + 12 * 12 + 5 + 24 * 16 + 4 + 5
    with torch.device("meta"):  # keys and shapes without allocating 440M parameters
        model = DualEncoder.from_config(SALSA_CONFIG)
    mapped, ignored = convert_salsa_state_dict(real)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == own
    assert len(ignored) == 11 and all(any(re.search(p, k) for p, _ in SALSA_IGNORED) for k, _ in ignored)
    assert load_state_dict_checked(model, mapped, strict=True).loaded == len(own)


def test_download_joins_the_parts(tmp_path):
    blob = bytes(range(256)) * 1000
    served = tmp_path / "served"
    (served / "s" / "download").mkdir(parents=True)
    names = [f"passt_roberta.{i}.ckpt" for i in (1, 2, 3)]
    for i, name in enumerate(names):
        (served / "s" / "download" / name).write_bytes(blob[i * 90000:(i + 1) * 90000])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{server.server_port}/s/download/{name}" for name in names]
    try:
        path = download_salsa_checkpoint(tmp_path / "cache", parts=urls, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert path.name == "passt_roberta.ckpt" and path.read_bytes() == blob
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == ["passt_roberta.ckpt"]
    assert download_salsa_checkpoint(tmp_path / "cache", parts=urls) == path  # cached: no server needed


# ----------------------------------------------------------------------------- Hugging Face layout


def test_pretrained_round_trip(tmp_path, source_model, waveforms):
    out = save_pretrained(source_model, tmp_path / "hub" / "model", meta={"note": "test"})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    assert all(p.stat().st_mode & 0o044 for p in [out, *out.iterdir()])  # readable as usual, not 0600
    doc = json.loads((out / "config.json").read_text())
    assert doc["format"] == "soundsift-model" and doc["version"] == 1 and doc["config"] == source_model.config
    assert "library_name: soundsift" in (out / "README.md").read_text()
    model = from_pretrained(out)
    np.testing.assert_array_equal(model.embed_texts(CAPTIONS), source_model.embed_texts(CAPTIONS))
    np.testing.assert_array_equal(model.embed_waveforms(waveforms), source_model.embed_waveforms(waveforms))
    assert model.identity == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert model.meta == {"note": "test"} and detect_format(out) == "directory"


def test_pretrained_refuses_other_versions_and_mismatched_files(tmp_path, source_model):
    out = save_pretrained(source_model, tmp_path / "m")
    config = out / "config.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(ModelFileError, match=r"format version 99 is not supported .*expects 1"):
        from_pretrained(out)
    config.write_text(json.dumps({**doc, "format": "something-else"}))
    with pytest.raises(ModelFileError, match="no 'soundsift-model' format tag"):
        from_pretrained(out)
    config.write_text(json.dumps({**doc, "config": {**doc["config"], "embed_dim": 8}}))
    with pytest.raises(ModelFileError, match="describe different models"):
        from_pretrained(out)
    config.unlink()
    with pytest.raises(ModelFileError, match="no config.json"):
        from_pretrained(out)


class _FrozenText(TextEncoder):
    """A frozen 'pretrained' text tower, rebuilt from its seed: save_pretrained must not store it."""

    out_dim, frozen_pretrained = 6, True

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(256, 6, generator=torch.Generator().manual_seed(0)), False)

    def forward(self, texts):
        return torch.stack([self.table[[ord(c) % 256 for c in t]].mean(0) for t in texts])


register_text_encoder("interop-test-frozen", _FrozenText)


def test_pretrained_skips_frozen_towers_and_overwrites_in_place(tmp_path):
    from safetensors import safe_open

    model = DualEncoder({"name": "cnn", "size": "tiny"}, "interop-test-frozen", embed_dim=4)
    out = tmp_path / "m"
    out.mkdir()
    (out / "README.md").write_text("my own card\n")
    save_pretrained(model, out)
    with torch.no_grad():
        model.text_proj.weight.add_(1.0)
    save_pretrained(model, out)  # into an existing directory: file by file
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("text.table")]
    assert (out / "README.md").read_text() == "my own card\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = from_pretrained(out)
    np.testing.assert_array_equal(loaded.embed_texts(CAPTIONS), model.embed_texts(CAPTIONS))


def test_repo_ids_go_through_the_hub(tmp_path, monkeypatch, source_model):
    with pytest.raises(ModelFileError, match=r"nobody/no-such-model: .*Hugging Face Hub"):
        from_pretrained("nobody/no-such-model")  # tests run with HF_HUB_OFFLINE=1
    with pytest.raises(ModelFileError, match="not a directory, nor a Hugging Face Hub repo id"):
        from_pretrained(tmp_path / "absent" / "deeper" / "path")
    saved = save_pretrained(source_model, tmp_path / "repo")
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        calls.append((repo_id, filename, revision))
        return str(saved / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = from_pretrained("someone/soundsift-model", revision="v1")
    assert calls == [("someone/soundsift-model", "config.json", "v1"), ("someone/soundsift-model", "model.safetensors", "v1")]
    np.testing.assert_array_equal(model.embed_texts(CAPTIONS), source_model.embed_texts(CAPTIONS))


def test_detect_format(tmp_path, source_model):
    save_model(source_model, tmp_path / "m.pt")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {"net.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    assert detect_format(tmp_path / "m.pt") == "soundsift"
    assert detect_format(tmp_path / "junk.bin") == "unknown"
    assert detect_format(tmp_path / "other.ckpt") == "unknown"
    assert detect_format(tmp_path / "nothing.pt") == "missing"
