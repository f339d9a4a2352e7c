"""The demo generates its benchmark once: a finished one of the same preset and seed is reused."""

from soundsift.data.synth.benchmark import generate
from soundsift.training.demo import _generated


def test_a_finished_benchmark_is_recognised_and_anything_else_is_not(tmp_path):
    root = tmp_path / "data"
    assert not _generated(root, "tiny", 1)
    generate(root, "tiny", seed=1, progress=False)
    assert _generated(root, "tiny", 1)
    assert not _generated(root, "tiny", 2) and not _generated(root, "small", 1)
    generate(tmp_path / "other", "tiny", seed=1, progress=False, n_evaluation=5)  # other sizes: not the preset
    assert not _generated(tmp_path / "other", "tiny", 1)
    (root / "synth_info.json").write_text("{broken", encoding="utf-8")  # a killed generate never wrote it whole
    assert not _generated(root, "tiny", 1)
