"""EfficientAT MobileNetV3 encoder: official key layout, any-length input, length-aware pooling."""

from __future__ import annotations

import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.frontends.kaldi import n_frames
from soundsift.encoders.mn import MobileNetEncoder
from soundsift.encoders.pretrained import load_state_dict_checked

SR = 32000

# MobileNetV3-Large rows as EfficientAT lists them: in, kernel, expanded, out, SE, stride.
_TABLE = [
    (16, 3, 16, 16, 0, 1),
    (16, 3, 64, 24, 0, 2),
    (24, 3, 72, 24, 0, 1),
    (24, 5, 72, 40, 1, 2),
    (40, 5, 120, 40, 1, 1),
    (40, 5, 120, 40, 1, 1),
    (40, 3, 240, 80, 0, 2),
    (80, 3, 200, 80, 0, 1),
    (80, 3, 184, 80, 0, 1),
    (80, 3, 184, 80, 0, 1),
    (80, 3, 480, 112, 1, 1),
    (112, 3, 672, 112, 1, 1),
    (112, 5, 672, 160, 1, 2),
    (160, 5, 960, 160, 1, 1),
    (160, 5, 960, 160, 1, 1),
]


def efficientat_layout(width: float, classes: int = 527) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an EfficientAT ``mn*`` state dict (torchvision ConvNormActivation triples,
    ``conc_se_layers.0.fc1/fc2`` SE, MLP classifier at ``classifier.2`` and ``classifier.5``)."""

    def div8(v: float) -> int:
        new = max(8, int(v + 4) // 8 * 8)
        return new + 8 if new < 0.9 * v else new

    keys: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
        keys[f"{prefix}.0.weight"] = (cout, cin // groups, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.1.{name}"] = (cout,)
        keys[f"{prefix}.1.num_batches_tracked"] = ()

    conv_bn("features.0", 1, div8(16 * width), 3)
    for i, (cin, k, exp, cout, se, _) in enumerate(_TABLE, start=1):
        cin, exp, cout = div8(cin * width), div8(exp * width), div8(cout * width)
        prefix, j = f"features.{i}.block", 0
        if exp != cin:
            conv_bn(f"{prefix}.{j}", cin, exp, 1)
            j += 1
        conv_bn(f"{prefix}.{j}", exp, exp, k, groups=exp)
        j += 1
        if se:
            squeeze = div8(exp // 4)
            keys[f"{prefix}.{j}.conc_se_layers.0.fc1.weight"] = (squeeze, exp)
            keys[f"{prefix}.{j}.conc_se_layers.0.fc1.bias"] = (squeeze,)
            keys[f"{prefix}.{j}.conc_se_layers.0.fc2.weight"] = (exp, squeeze)
            keys[f"{prefix}.{j}.conc_se_layers.0.fc2.bias"] = (exp,)
            j += 1
        conv_bn(f"{prefix}.{j}", exp, cout, 1)
    last = div8(160 * width)
    conv_bn("features.16", last, 6 * last, 1)
    hidden = div8(1280 * width)
    keys.update({"classifier.2.weight": (hidden, 6 * last), "classifier.2.bias": (hidden,)})
    keys.update({"classifier.5.weight": (classes, hidden), "classifier.5.bias": (classes,)})
    return keys


def test_layout_facts():
    big, small = efficientat_layout(4.0), efficientat_layout(0.1)
    # key counts of EfficientAT's own get_model(width_mult=...) state dicts
    assert len(big) == 312 and len(small) == 294
    assert big["features.0.0.weight"] == (64, 1, 3, 3)
    assert big["features.4.block.2.conc_se_layers.0.fc1.weight"] == (72, 288)
    assert big["features.16.0.weight"] == (3840, 640, 1, 1)
    assert big["classifier.2.weight"] == (5120, 3840)


def test_full_size_mn40_loads_official_layout():
    with torch.device("meta"):
        enc = MobileNetEncoder("mn40_as_ext", pretrained=False)
        ckpt = {k: torch.empty(s) for k, s in efficientat_layout(4.0).items()}
    report = load_state_dict_checked(
        enc.model, ckpt, ignore_missing=("*.num_batches_tracked",), ignore_unexpected=("classifier.*",)
    )
    assert report.ok and report.missing == [] and len(report.ignored_unexpected) == 4
    assert enc.out_dim == 3840 and enc.url.endswith("/v0.0.1/mn40_as_ext_mAP_487.pt")


def test_tiny_checkpoint_file_loads(tmp_path):
    torch.manual_seed(0)
    sd = {
        k: (torch.rand(s) + 0.5 if "running_var" in k else torch.randn(s) * 0.1) if s else torch.tensor(7)
        for k, s in efficientat_layout(0.1).items()
    }
    torch.save({"state_dict": sd}, tmp_path / "mn01.pt")
    enc = MobileNetEncoder(size="tiny", checkpoint=tmp_path / "mn01.pt").eval()
    assert torch.equal(enc.model.features[16][1].running_var, sd["features.16.1.running_var"])
    assert enc(torch.randn(1, SR)).isfinite().all()
    del sd["features.3.block.1.0.weight"]
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match=r"features\.3\.block\.1\.0\.weight"):
        MobileNetEncoder(size="tiny", checkpoint=tmp_path / "broken.pt")


@pytest.fixture(scope="module")
def tiny() -> MobileNetEncoder:
    torch.manual_seed(0)
    return build_audio_encoder("mn", size="tiny").eval()


def test_any_length_and_eval_determinism(tiny):
    for seconds in (0.3, 4.0):
        x = torch.randn(1, int(seconds * SR)) * 0.1
        with torch.no_grad():
            out = tiny(x)
            assert out.shape == (1, tiny.out_dim) == (1, 96) and torch.equal(out, tiny(x))


def test_output_frames_match_the_network(tiny):
    for samples in (SR, 3 * SR + 17):
        frames = n_frames(samples, 320)
        with torch.no_grad():
            fmap = tiny.model(torch.zeros(1, 1, 128, frames))
        assert fmap.shape[-1] == int(tiny.model.output_frames(torch.tensor(frames)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_length_aware_pooling(tiny):
    x = torch.randn(2, 4 * SR) * 0.1
    full = torch.tensor([4 * SR, 4 * SR])
    lengths = torch.tensor([4 * SR, 2 * SR])
    with torch.no_grad():
        plain = tiny(x)
        assert _rel(tiny(x, full), plain) < 1e-5
        assert _rel(plain[1], tiny(x[1:])[0]) < 1e-4  # batch mates do not matter
        masked = tiny(x, lengths)
        y = x.clone()
        y[1, 2 * SR :] = 5.0  # whatever the padding holds
        assert torch.equal(masked, tiny(y, lengths))
        assert _rel(masked[1], plain[1]) > 1e-2  # the padded half is left out of the average


def test_training_mode_and_gradients():
    torch.manual_seed(0)
    enc = MobileNetEncoder(size="tiny").train()
    out = enc(torch.randn(2, SR) * 0.1)
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match="unknown MobileNet variant"):
        MobileNetEncoder("mn99", pretrained=False)
