"""The traps a newcomer fell into following the README, each closed: one test per trap."""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsift.cli.main import build_parser, main
from soundsift.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16",
        "optim.epochs=1", "optim.batch_size=8", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("newcomer") / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(root)]) == 0
    return root


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("soundsift: error: "), err
    return err[0]


# ------------------------------------------------------------------- 1. the README's Python runs


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Every ```python block of the README, run in a folder holding the files it names (tiny models, audio
    files in their folders: an index of such a folder is built by the block itself)."""
    import torch

    from soundsift import DualEncoder, save_model

    blocks = readme_python_blocks()
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        for name in re.findall(r"\"([\w./-]+\.pt)\"", block):  # model files the snippet loads
            torch.manual_seed(0)
            save_model(DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=16), name)
        for i, name in enumerate(re.findall(r"\"([\w./-]+\.wav)\"", block)):  # audio files: distinct tones
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(name, (0.1 * np.sin(np.arange(16000) / (5 + 3 * i))).astype("float32"), 16000)
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
        if "score" in namespace:
            assert isinstance(namespace["score"], float) and -1.0 <= namespace["score"] <= 1.0
        if "metrics" in namespace:  # computed from the block's own embeddings
            assert 0.5 <= namespace["metrics"]["mAP@10"] <= 1.0 and namespace["metrics"]["R@1"] in (0.0, 0.5, 1.0)
        folder = re.search(r"build_index\(\"([^\"]+)\"", block)
        if folder and "hit" in namespace:  # a search result names a file of the folder the block indexed
            assert (Path(folder.group(1)) / namespace["hit"].path).is_file()


# ------------------------------------------------------------------- 2. no run replaces another


def test_a_packaged_config_writes_a_fresh_folder_and_never_replaces_a_finished_run(synth, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo_model = tmp_path / "runs" / "demo" / "stage1-cnn" / "model.pt"
    demo_model.parent.mkdir(parents=True)
    demo_model.write_bytes(b"the demo's model")
    assert main(["train", "--config", "demo/stage1.yaml", f"data.root={synth}", *TINY]) == 0
    said = capsys.readouterr()
    assert demo_model.read_bytes() == b"the demo's model"  # the demo's run is left alone
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("stage1-")]
    assert len(runs) == 1 and (runs[0] / "model.pt").is_file()
    assert f"training into runs/{runs[0].name}" in said.err  # it says where the run goes
    digest = hashlib.sha256((runs[0] / "model.pt").read_bytes()).hexdigest()

    again = ["-q", "train", "--config", "demo/stage1.yaml", f"data.root={synth}", f"out_dir={runs[0]}", *TINY]
    assert main(again) == 2
    line = one_line(capsys)
    assert "holds a finished run" in line and "--overwrite" in line and "--resume" in line
    assert hashlib.sha256((runs[0] / "model.pt").read_bytes()).hexdigest() == digest
    assert main([*again, "--overwrite"]) == 0


# ------------------------------------------------------------------- 3. the folder format's splits


def write_folder(root: Path, split_names: list[str] | None, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"sound{i}.wav"
        sf.write(root / name, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
        split = [] if split_names is None else [split_names[i % len(split_names)]]
        rows += [[name, f"a sound number {i} caption {j}", *split] for j in range(2)]
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption", *([] if split_names is None else ["split"])])
        writer.writerows(rows)
    return root


@pytest.mark.parametrize("names", [["train", "validation", "test"], ["train", "val", "test"], ["Training", "Valid", "Eval"], None])
def test_folder_format_trains_with_the_usual_split_names_or_none(tmp_path, names):
    data = write_folder(tmp_path / "mine", names)
    assert main(["-q", "train", "--config", "demo/stage1.yaml", "data.format=folder", f"data.root={data}",
                 f"out_dir={tmp_path / 'run'}", *TINY]) == 0


def test_an_empty_folder_split_names_what_was_looked_for(tmp_path, capsys):
    data = write_folder(tmp_path / "mine", ["train", "test"])
    assert main(["-q", "train", "--config", "demo/stage1.yaml", "data.format=folder", f"data.root={data}",
                 f"out_dir={tmp_path / 'run'}", *TINY]) == 2
    line = one_line(capsys)
    assert "no rows of split 'validation'" in line and "'val'" in line and "'train', 'test'" in line


def test_hold_out_without_a_split_column_is_deterministic():
    from soundsift.data.readers.folder import hold_out

    files = [f"f{i}.wav" for i in range(50)]
    roles = hold_out(files)
    assert roles == hold_out(list(reversed(files)))  # order of the rows does not matter
    assert sorted(roles.values()).count("val") == 5 and sorted(roles.values()).count("test") == 5
    assert list(hold_out(["a", "b", "c"]).values()).count("train") == 1


# ------------------------------------------------------------------- 4. downloads fail fast and say what to do


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_against_a_closed_port_fails_in_seconds_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    started = time.monotonic()
    assert main(["-q", "download", "clotho", str(tmp_path / "clotho"), "--base-url",
                 f"http://127.0.0.1:{closed_port()}/files", "--splits", "val"]) == 2
    assert time.monotonic() - started < 5
    line = one_line(capsys)
    assert "cannot reach 127.0.0.1" in line and "clotho_captions_validation.csv" in line
    assert ".part" not in line and f"in {tmp_path / 'clotho'}" in line  # how to use a copy fetched elsewhere


def test_no_pretrained_never_touches_the_network(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("--no-pretrained opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    tiny_bert = "{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}"
    assert main(["-q", "train", "--config", "demo/stage1.yaml", "--dry-run", "--no-pretrained",
                 "model.audio_encoder={name: cnn, size: tiny}",
                 f"model.text_encoder={{name: hf, model: bert-base-uncased, config_overrides: {tiny_bert}}}"]) == 0
    assert "finite: True" in capsys.readouterr().out


def test_a_missing_data_root_is_reported_before_any_weights_are_fetched(tmp_path, capsys, monkeypatch):
    from soundsift.encoders import pretrained

    monkeypatch.setattr(pretrained, "download_file", lambda *a, **k: pytest.fail("weights fetched first"))
    assert main(["-q", "train", "--config", "paper/table1-mn-stage1.yaml", f"data.root={tmp_path / 'nowhere'}",
                 f"out_dir={tmp_path / 'run'}"]) == 2
    assert "nowhere" in one_line(capsys)


# ------------------------------------------------------------------- 6. an index keeps its model


def test_index_build_refuses_another_model_unless_rebuild(synth, tmp_path, capsys):
    from soundsift import DualEncoder, save_model

    models = []
    for seed in (0, 1):
        import torch

        torch.manual_seed(seed)
        models.append(save_model(DualEncoder({"name": "cnn", "size": "tiny"}, "tiny-bert", embed_dim=16),
                                 tmp_path / f"m{seed}.pt"))
    sounds, idx = synth / "validation", tmp_path / "idx"
    assert main(["-q", "index", "build", str(sounds), "--model", str(models[0]), "--out", str(idx)]) == 0
    capsys.readouterr()
    assert main(["-q", "index", "build", str(sounds), "--model", str(models[1]), "--out", str(idx)]) == 2
    assert "built with another model" in one_line(capsys)
    assert main(["-q", "index", "build", str(sounds), "--model", str(models[1]), "--out", str(idx), "--rebuild"]) == 0


# ------------------------------------------------------------------- 7. meaningless values are refused


@pytest.mark.parametrize("override,message", [
    ("optim.epochs=0", "optim.epochs must be >= 1"), ("optim.batch_size=0", "optim.batch_size must be >= 1"),
    ("optim.lr=0", "optim.lr must be > 0"), ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
])
def test_values_that_make_a_run_meaningless_are_refused(synth, tmp_path, capsys, override, message):
    assert main(["-q", "train", "--config", "demo/stage1.yaml", f"data.root={synth}", f"out_dir={tmp_path}",
                 override]) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "model.pt").exists()


# ------------------------------------------------------------------- 8. --help explains every option


def test_every_option_has_help_and_shows_its_default():
    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.dest != "help":
                yield path, parser, action

    missing, seen = [], 0
    for path, parser, action in walk(build_parser(), "soundsift"):
        seen += 1
        if not action.help:
            missing.append(f"{path} {action.option_strings or action.dest}")
        elif action.option_strings and action.default not in (None, argparse.SUPPRESS) and action.dest != "version":
            assert "(default:" in parser.format_help(), path
    assert seen > 60 and not missing, missing


def parsers(parser: argparse.ArgumentParser):
    """``parser`` and every (nested) subcommand parser."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from parsers(sub)


def test_help_tells_each_default_once():
    seen = 0
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                seen += 1
                text = formatter._expand_help(action)
                assert text.lower().count("default") <= 1, f"{parser.prog} {action.option_strings}: {text}"
                assert "(default: None)" not in text
    assert seen > 60


# ------------------------------------------------------------------- 9. typos get a way out


@pytest.mark.parametrize("argv,message", [
    (["serach"], "soundsift: error: unknown command 'serach'; did you mean 'search'?"),
    (["index", "biuld"], "soundsift index: error: unknown command 'biuld'; did you mean 'build'?"),
    (["search", "IDX", "rain", "--topk", "3"], "soundsift search: error: unknown option --topk; did you mean --top-k?"),
    (["data", "info", "DIR", "--formt", "folder"], "soundsift data info: error: unknown option --formt; did you mean --format?"),
    (["index", "build", "DIR", "--out", "IDX", "--faiss", "ivfs"],
     "soundsift index build: error: argument --faiss: invalid choice: 'ivfs'; did you mean 'ivfsq'?"),
])
def test_a_typo_is_the_commands_error_with_a_suggestion(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.splitlines()[-1] == message, err
    assert err.startswith("usage: " + message.split(": error:")[0] + " ")  # the usage of the command at fault


def test_options_after_the_command():
    parser = build_parser()
    args = parser.parse_args(["search", "IDX", "rain", "--top-k", "3", "-q", "--debug"])
    assert (args.k, args.quiet, args.debug) == (3, True, True)
    args = parser.parse_args(["-q", "index", "build", "DIR", "--out", "IDX"])
    assert (args.quiet, args.debug) == (True, False)  # given before the command: not reset by it
    args = parser.parse_args(["train", "a=1", "--config", "X", "--dry-run", "b=2"])
    assert args.overrides == ["a=1", "b=2"]  # overrides on both sides of the options
    with pytest.raises(ModelFileError):  # --debug after the command: the error is raised, not printed
        main(["evaluate", "--model", "absent.pt", "--data-root", "absent", "--debug"])
