"""What every encoder that cuts long audio into 10-s snippets (PaSST, ATST-Frame; the paper's section
4.3) must do, checked once per encoder: 30 s of audio embeds as the mean of its three snippets."""

from __future__ import annotations

import pytest
import torch

from soundsift.encoders import build_audio_encoder


@pytest.mark.parametrize(("name", "sr"), [("atst", 16000), ("passt", 32000)])
def test_thirty_seconds_is_mean_of_three_snippets(name, sr):
    torch.manual_seed(0)
    tiny = build_audio_encoder(name, size="tiny").eval()
    x = torch.randn(1, 30 * sr) * 0.1
    with torch.no_grad():
        whole = tiny(x)
        parts = torch.stack([tiny(x[:, i * 10 * sr : (i + 1) * 10 * sr]) for i in range(3)]).mean(0)
        assert torch.equal(whole, tiny(x))  # evaluation is deterministic
    assert whole.shape == (1, tiny.out_dim) == (1, 32) and tiny.sample_rate == sr
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=1e-5)
