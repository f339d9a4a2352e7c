"""AST and CLAP audio towers through transformers, with tiny random configs (no downloads)."""

from __future__ import annotations

import pytest
import torch

from soundsift.encoders import build_audio_encoder
from soundsift.encoders.hf_audio import ASTEncoder, CLAPAudioEncoder


@pytest.fixture(scope="module")
def ast():
    torch.manual_seed(0)
    return ASTEncoder(pretrained=False).eval()


@pytest.fixture(scope="module")
def clap():
    torch.manual_seed(0)
    return CLAPAudioEncoder(pretrained=False).eval()


@pytest.mark.parametrize("name", ["ast", "clap"])
def test_forward_backward_shapes_and_determinism(name):
    torch.manual_seed(1)
    enc = build_audio_encoder(name, random_init=True)
    assert enc.sample_rate == 16000
    wav = torch.randn(2, 12000) * 0.1
    lengths = torch.tensor([12000, 7000])
    enc.eval()
    with torch.no_grad():
        a = enc(wav, lengths)
        b = enc(wav, lengths)
    assert a.shape == (2, enc.out_dim) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])
    enc.train()
    out = enc(wav, lengths)
    out.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-3:])


def test_padding_beyond_length_is_ignored(ast):
    wav = torch.randn(1, 9000) * 0.1
    padded = torch.cat([wav, torch.randn(1, 5000)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(ast(wav), ast(padded, torch.tensor([9000])))


def test_long_clip_is_mean_of_its_windows(ast, clap):
    for enc in (ast, clap):
        n = enc.window_samples
        first, second = torch.randn(1, n) * 0.1, torch.randn(1, n) * 0.1
        with torch.no_grad():
            both = enc(torch.cat([first, second], dim=1))
            parts = (enc(first) + enc(second)) / 2
        torch.testing.assert_close(both, parts, atol=1e-5, rtol=1e-4)


def test_tiny_window_sizes(ast, clap):
    assert ast.window_samples == 400 + 127 * 160  # 128 fbank frames of 25 ms every 10 ms
    assert clap.window_samples == 2 * 16000
    with torch.no_grad():  # a clip shorter than one analysis frame still embeds
        assert ast(torch.randn(1, 100)).shape == (1, ast.out_dim)
        assert clap(torch.randn(1, 100)).shape == (1, clap.out_dim)


def test_input_sample_rate_resamples():
    torch.manual_seed(2)
    enc = ASTEncoder(pretrained=False, input_sample_rate=8000).eval()
    assert enc.sample_rate == 8000 and enc.model_rate == 16000
    with torch.no_grad():
        assert enc(torch.randn(2, 8000)).shape == (2, enc.out_dim)


def test_trainable_last_layers():
    enc = ASTEncoder(pretrained=False, trainable=1)
    layers = enc.layers
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in enc.model.embeddings.parameters())
    clap = CLAPAudioEncoder(pretrained=False, trainable=0)
    trainable = {n.split(".")[0] for n, p in clap.model.named_parameters() if p.requires_grad}
    assert trainable == {"audio_projection", "audio_model"}
    assert not any(p.requires_grad for p in clap.model.audio_model.audio_encoder.layers.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling"):
        ASTEncoder(pretrained=False, pooling="max")
    enc = ASTEncoder(pretrained=False)
    with pytest.raises(ValueError, match="batch, samples"):
        enc(torch.randn(16000))
    with pytest.raises(OSError, match="local folder"):
        ASTEncoder(model="/nonexistent/ast-folder", local_files_only=True)
