"""The package's shape: an acyclic import graph, imports that point down the layers, a cheap ``import
soundsift``, and the CLI's error policy (one line, non-zero exit, no traceback)."""

from __future__ import annotations

import ast
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from soundsift.cli.main import main

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "soundsift"

# Lower layers never import higher ones; modules of one layer import each other only within their
# own package (encoders/ never imports data/, training/ never imports search/). docs/architecture.md.
LAYERS = [
    {"errors", "version", "names"},
    {"atomic", "registry", "string_table", "digest", "progress"},
    {"downloader", "audio", "captions", "config", "teacher_store"},
    {"losses", "metrics", "correspondences", "estimators", "encoders", "data", "spans"},
    {"model", "export"},
    {"checkpoints"},
    {"training", "search"},
    {"cli"},
    {"__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every soundsift module ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # an attribute of a module: the module
                target = target.rpartition(".")[0]
            if target.startswith("soundsift") and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_has_no_cycle():
    assert len(GRAPH) > 60  # the walk found the package
    assert find_cycle(GRAPH) is None


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_point_down_the_layers():
    unknown = sorted({top(m) for m in MODULES if top(m)} - set(LAYER))
    assert not unknown, f"modules outside the layer table: {unknown}"
    wrong = []
    for name, targets in GRAPH.items():
        if not top(name):  # soundsift/__init__.py: its API is imported lazily by name
            continue
        for target in targets:
            a, b = top(name), top(target)
            if a != b and b and LAYER[b] >= LAYER[a]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports that point up or sideways: " + ", ".join(sorted(wrong))


MATH = ("soundsift.losses", "soundsift.metrics", "soundsift.correspondences", "soundsift.estimators",
        "soundsift.spans")


def test_math_modules_know_tensors_not_models_or_files():
    """A math module (or package: its submodules may import each other) imports only these."""
    checked = 0
    for math in MATH:
        for name in (n for n in GRAPH if n == math or n.startswith(math + ".")):
            # the teacher store is files of arrays (split out of correspondences), no models either
            outside = {t for t in GRAPH[name] if t != math and not t.startswith(math + ".")}
            assert outside <= {"soundsift.atomic", "soundsift.errors", "soundsift.version", "soundsift.names",
                                "soundsift.string_table", "soundsift.teacher_store"}, name
            checked += 1
    assert checked > len(MATH)  # the walk saw the metrics package's submodules too


def test_import_soundsift_is_cheap():
    code = ("import sys, soundsift; heavy = [m for m in ('torch', 'lightning', 'transformers', 'numpy') "
            "if m in sys.modules]; print(','.join(heavy)); soundsift.load_model; "
            "print('lightning' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "", f"import soundsift loaded {out[0]}"
    assert out[1] == "False False"  # the model API does not need Lightning or transformers


def test_public_api():
    """Every exported name is the object its home module defines, and the API does what it says."""
    import importlib
    import re

    import torch

    import soundsift
    from soundsift.errors import SoundsiftError

    assert dir(soundsift) == sorted(soundsift.__all__)
    for name, module in soundsift._API.items():  # loaded on first use: the same object, not a copy
        assert getattr(soundsift, name) is getattr(importlib.import_module(module), name), name
    assert set(soundsift._API) | {"SoundsiftError", "__version__"} == set(soundsift.__all__)
    assert soundsift.SoundsiftError is SoundsiftError and issubclass(SoundsiftError, Exception)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", soundsift.__version__)
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.7], [0.1, 0.3, 0.6]])  # caption 2 ranks its audio 2nd
    assert soundsift.text_to_audio_metrics(similarity, [0, 1, 2]) == pytest.approx(
        {"mAP@10": (1 + 1 + 0.5) / 3, "R@1": 2 / 3, "R@5": 1.0, "R@10": 1.0})
    with pytest.raises(AttributeError, match="nothing_here"):
        soundsift.nothing_here  # noqa: B018


# ----------------------------------------------------------------------------------- the error policy


def one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("soundsift: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from soundsift.data.synth.benchmark import generate

    return generate(tmp_path_factory.mktemp("arch") / "synth", preset="tiny", seed=0, progress=False)


def test_missing_model_file(capsys, dataset, tmp_path):
    line = one_error_line(capsys, ["-q", "evaluate", "--model", str(tmp_path / "nope.pt"), "--data-root", str(dataset)])
    assert "nope.pt: model file not found" in line and "zero-shot" in line  # names the published ones


def test_corrupt_model_file(capsys, dataset, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file" * 10)
    line = one_error_line(capsys, ["-q", "evaluate", "--model", str(bad), "--data-root", str(dataset)])
    assert "bad.pt: not a readable soundsift model file" in line
    assert "weights_only` set to `False" not in line and "weights_only=False" not in line


def test_override_of_the_wrong_type(capsys, dataset):
    line = one_error_line(capsys, ["-q", "train", "--config", "demo/stage1.yaml", f"data.root={dataset}",
                                   "optim.lr=abc"])
    assert "optim.lr must be a number, got 'abc'" in line
    line = one_error_line(capsys, ["-q", "train", "--config", "demo/stage1.yaml", "optim.epochs=2.5"])
    assert "optim.epochs must be an integer" in line


def test_unknown_encoder_name(capsys, dataset, tmp_path):
    line = one_error_line(capsys, ["-q", "train", "--config", "demo/stage1.yaml", f"data.root={dataset}",
                                   f"out_dir={tmp_path}", "model.audio_encoder.name=nope"])
    assert "unknown audio encoder 'nope'; known:" in line and "passt" in line


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_failed_weight_download(capsys, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/atst_as2M.ckpt"
        line = one_error_line(capsys, ["-q", "train", "--config", "demo/stage1.yaml", f"data.root={dataset}",
                                       f"out_dir={tmp_path / 'run'}", f"model.audio_encoder={{name: atst, url: '{url}'}}"])
    finally:
        server.shutdown()
    assert "HTTP 404" in line and url in line


def test_a_bug_keeps_its_traceback(monkeypatch):
    from soundsift.cli import data

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(data, "synth_main", broken)
    with pytest.raises(ZeroDivisionError):  # not flattened to a line: anything else is a bug
        main(["synth"])


def test_debug_shows_the_traceback(dataset, tmp_path):
    from soundsift.errors import ModelFileError

    with pytest.raises(ModelFileError):
        main(["--debug", "-q", "evaluate", "--model", str(tmp_path / "nope.pt"), "--data-root", str(dataset)])


def test_console_script_prints_one_line(dataset, tmp_path):
    """The installed command, as a user runs it: one line on stderr, exit 2, no traceback."""
    exe = Path(sys.executable).with_name("soundsift")
    if not exe.is_file():
        pytest.skip(f"{exe} is not installed (run `make install`)")
    result = subprocess.run([str(exe), "-q", "evaluate", "--model", str(tmp_path / "nope.pt"), "--data-root",
                             str(dataset)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"soundsift: error: {tmp_path / 'nope.pt'}: model file not found")


def test_a_closed_stdout_ends_quietly(tmp_path):
    """``soundsift reproduce demo --dry-run | head -2``: the reader has gone before the lines come (the read
    end is closed first, so this does not depend on timing). Exit 141 as `yes | head`, no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "soundsift.cli.main", "reproduce", "demo", "--data-root", "d",
                                 "--out", str(tmp_path), "--dry-run"], stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""


def test_another_broken_pipe_keeps_its_traceback(monkeypatch):
    from soundsift.cli import data

    def broken(args):
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr(data, "synth_main", broken)
    with pytest.raises(BrokenPipeError):  # stdout is fine: a bug, not a reader that went away
        main(["synth"])
