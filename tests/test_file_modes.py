"""Every file soundsift writes gets the user's umask (0644 under umask 022), whichever library wrote it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from soundsift.cli.main import main

TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16",
        "optim.epochs=1", "optim.batch_size=16", "trainer.progress_bar=false"]


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """Relative path -> octal mode of every file and folder under ``root`` (``root`` itself as '.')."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {str(p.relative_to(root) if root.is_dir() else p.name): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}


def assert_umask_modes(root: Path) -> None:
    found = modes(root)
    assert found, root
    wrong = {}
    for name, mode in found.items():
        path = root / name if root.is_dir() else root
        expected = "0o755" if path.is_dir() else "0o644"
        if mode != expected:
            wrong[name] = mode
    assert not wrong, f"files not written with the umask's permissions: {wrong}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny benchmark and a tiny stage-1 run, made under umask 022."""
    old = os.umask(0o022)
    try:
        base = tmp_path_factory.mktemp("modes")
        assert main(["-q", "synth", "--preset", "tiny", "--out", str(base / "data")]) == 0
        assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={base / 'data'}",
                     f"out_dir={base / 'run'}", *TINY]) == 0
    finally:
        os.umask(old)
    return base


def test_synth_and_training_outputs(run):
    assert_umask_modes(run / "data")
    assert_umask_modes(run / "run")


def test_teachers_file(run):
    out = run / "teachers" / "t.safetensors"
    assert main(["-q", "teachers", "--model", str(run / "run" / "model.pt"), "--data-root", str(run / "data"),
                 "--out", str(out)]) == 0
    assert_umask_modes(out)


def test_submission_file(run, tmp_path):
    out = tmp_path / "submission.csv"
    assert main(["-q", "evaluate", "--model", str(run / "run" / "model.pt"), "--data-root", str(run / "data"),
                 "--submission", str(out)]) == 0
    assert_umask_modes(out)


def test_index_files(run, tmp_path):
    assert main(["-q", "index", "build", str(run / "data" / "validation"), "--model", str(run / "run" / "model.pt"),
                 "--out", str(tmp_path / "idx"), "--faiss", "none"]) == 0
    assert_umask_modes(tmp_path / "idx")


def test_hugging_face_layout_new_and_existing_folder(run, tmp_path):
    from soundsift import load_model, save_pretrained

    model = load_model(run / "run" / "model.pt", device="cpu")
    save_pretrained(model, tmp_path / "hf")
    assert_umask_modes(tmp_path / "hf")
    save_pretrained(model, tmp_path / "hf")  # into the existing folder: file by file
    assert_umask_modes(tmp_path / "hf")


def test_converted_yamnet_weights(tmp_path):
    from soundsift.encoders.yamnet.convert import save_converted

    save_converted({"w": torch.ones(2)}, ["speech"], tmp_path / "yamnet" / "w.safetensors", "test")
    assert_umask_modes(tmp_path / "yamnet")


def test_downloaded_file(tmp_path):
    from soundsift.downloader import download_file

    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    source.chmod(0o600)  # the copy's mode comes from the umask, not from the source
    dest = download_file(source.as_uri(), tmp_path / "got" / "file.bin", progress=False)
    assert dest.read_bytes() == b"x" * 1000
    assert_umask_modes(tmp_path / "got")


def test_config_and_results_written_by_library_helpers(tmp_path):
    from soundsift.atomic import atomic_write
    from soundsift.config import dump_config, load_config

    dump_config(load_config("demo/stage1.yaml", [f"out_dir={tmp_path}"]), tmp_path / "c" / "config.yaml")

    def private(tmp: Path) -> None:  # a writer that leaves a 0600 file behind, as safetensors does
        tmp.unlink()
        tmp.write_text("x")
        tmp.chmod(0o600)

    atomic_write(tmp_path / "c" / "other.txt", private)
    assert_umask_modes(tmp_path / "c")
