"""The `index build|info`, `search` and `tag` subcommands, called through their own argparse parser."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.cli import search as search_cli  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.search.index import open_index  # noqa: E402
from test_index import BAD, GOOD, make_library, make_model  # noqa: E402


def run(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    lib = make_library(base / "sounds")
    model = make_model(base / "model.pt")
    assert run(["-q", "index", "build", str(lib), "--model", str(model), "--out", str(base / "idx")]) == 0
    return lib, model, base / "idx"


def test_index_build_prints_summary_and_skipped_files(built, capsys, tmp_path):
    lib, model, _ = built
    code = run(["index", "build", str(lib), "--model", str(model), "--out", str(tmp_path / "i"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0
    assert f"indexed {len(GOOD)} files" in out and f"skipped {len(BAD)}" in out
    assert "skipped broken.wav:" in err and "skipped.txt" in err
    assert run(["index", "info", str(tmp_path / "i"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == len(GOOD) and info["skipped"] == len(BAD) and info["audio_root"] == str(lib.resolve())


def test_search_json_is_ranked_list_of_objects(built, capsys):
    _, model_path, idx = built
    assert run(["search", str(idx), "a dog barking", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all({"id", "path", "score"} <= set(h) for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    index, model = open_index(idx), load_model(model_path)
    q = model.embed_texts(["a dog barking"])[0]
    best = index.entries[int(np.argmax(index.embeddings @ q))]
    assert (hits[0]["id"], hits[0]["path"]) == (best.id, best.path)
    assert run(["search", str(idx), "a dog barking", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1" and lines[0].endswith(hits[0]["path"])


def test_search_errors_are_one_line_exit_2(built, capsys, tmp_path):
    _, _, idx = built
    assert run(["search", str(tmp_path / "nothing"), "rain"]) == 2
    assert "index directory not found" in capsys.readouterr().err
    other = make_model(tmp_path / "other.pt", seed=3)
    assert run(["search", str(idx), "rain", "--model", str(other)]) == 2
    assert "built with model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["search", str(idx), "rain", "-k", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_tag_ranks_labels_with_scores(built, capsys):
    lib, model_path, _ = built
    f = lib / "animals" / "dog.wav"
    assert run(["tag", "--model", str(model_path), str(f), "--labels", "dog, rain,,car horn,dog",
                "--template", "the sound of {label}", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["file"] == str(f)
    labels = [t["label"] for t in result["labels"]]
    assert sorted(labels) == ["car horn", "dog", "rain"]  # stripped, deduplicated
    model = load_model(model_path)
    from soundsift.audio import load_audio

    a = model.embed_waveforms([load_audio(f, model.sample_rate)])[0]
    t = model.embed_texts([f"the sound of {x}" for x in labels])
    np.testing.assert_allclose([x["score"] for x in result["labels"]], t @ a, atol=1e-5)
    assert sorted(t @ a, reverse=True) == pytest.approx(list(t @ a), abs=1e-6)
    assert sum(x["probability"] for x in result["labels"]) == pytest.approx(1.0, abs=1e-4)
    assert run(["tag", "--model", str(model_path), str(f), str(lib / "long.wav"), "--labels", "a,b,c",
                "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(f) and len(out) == 6


def test_tag_errors(built, capsys):
    lib, model_path, _ = built
    assert run(["tag", "--model", str(model_path), str(lib / "broken.wav"), "--labels", "x"]) == 2
    assert "broken.wav: cannot decode audio" in capsys.readouterr().err
    assert run(["tag", "--model", str(model_path), str(lib / "long.wav"), "--labels", " , "]) == 2
    assert "no labels given" in capsys.readouterr().err
    assert run(["tag", "--model", str(model_path), str(lib / "long.wav"), "--labels", "x",
                "--template", "no placeholder"]) == 2
    assert "must contain {label}" in capsys.readouterr().err


def test_serve_parser_defaults_to_loopback():
    parser = argparse.ArgumentParser()
    search_cli.add_serve_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "IDX"])
    assert (args.host, args.port, args.max_k) == ("127.0.0.1", 8000, 100)


def test_serve_builds_the_app_and_binds_loopback(built, monkeypatch, capsys):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import uvicorn
    from fastapi.testclient import TestClient

    _, _, idx = built
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    port = free_port()  # serve checks that the port is free
    assert run(["serve", str(idx), "--port", str(port), "--max-k", "5"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", port)
    assert f"http://127.0.0.1:{port}/" in capsys.readouterr().out
    client = TestClient(seen["app"], base_url=f"http://127.0.0.1:{port}")
    assert client.get("/api/search", params={"q": "rain", "k": 6}).status_code == 422  # --max-k
    assert len(client.get("/api/search", params={"q": "rain", "k": 5}).json()) == 5
    assert TestClient(seen["app"], base_url="http://evil.example").get("/api/info").status_code == 400
    monkeypatch.delenv("SOUNDSIFT_TOKEN", raising=False)
    seen.clear()
    assert run(["serve", str(idx), "--host", "0.0.0.0", "--port", str(free_port())]) == 2  # no token: refused
    assert "--no-auth" in capsys.readouterr().err and not seen
    assert run(["serve", str(idx), "--host", "0.0.0.0", "--port", str(free_port()), "--no-auth"]) == 0
    assert "warning: --no-auth: anyone who can reach 0.0.0.0" in capsys.readouterr().err
    assert TestClient(seen["app"], base_url="http://192.168.1.5:8000").get("/api/info").status_code == 200
    assert run(["serve", str(idx), "--host", "0.0.0.0", "--port", str(free_port()), "--token", "t" * 16]) == 0
    assert "plain HTTP" in capsys.readouterr().err
    remote = TestClient(seen["app"], base_url="http://192.168.1.5:8000")
    assert remote.get("/api/info").status_code == 401
    assert remote.get("/api/info", headers={"Authorization": "Bearer " + "t" * 16}).status_code == 200


def test_search_finds_a_model_folder_recorded_at_build(built, capsys, tmp_path):
    """An index built with a save_pretrained folder is searched with it again when --model is left out."""
    from soundsift.checkpoints import save_pretrained

    lib, model, _ = built
    folder = save_pretrained(load_model(model, device="cpu"), tmp_path / "model-folder")
    assert run(["-q", "index", "build", str(lib), "--model", str(folder), "--out", str(tmp_path / "i")]) == 0
    capsys.readouterr()
    assert run(["-q", "search", str(tmp_path / "i"), "a tone", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def bert_built(tmp_path_factory):
    """A small index whose model has a real (tiny) text tower: it strips punctuation from queries."""
    base = tmp_path_factory.mktemp("bert")
    lib = make_library(base / "sounds")
    model = make_model(base / "model.pt", text="tiny-bert")
    assert run(["-q", "index", "build", str(lib), "--model", str(model), "--out", str(base / "idx")]) == 0
    return lib, model, base / "idx"


def test_a_punctuation_only_query_or_label_is_a_one_line_error(bert_built, capsys):
    lib, model, idx = bert_built
    for argv in (["search", str(idx), "!!!"], ["search", str(idx), "?!", "--like", str(lib / "long.wav")]):
        assert run(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"search query {argv[2]!r} is empty after normalisation" in err[0], err
    assert run(["tag", "--model", str(model), str(lib / "long.wav"), "--labels", "dog,!!!"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["soundsift: error: label '!!!' is empty after normalisation (punctuation only)"]
    assert run(["search", str(idx), "dog!", "-k", "2"]) == 0  # punctuation beside words is fine


def test_paths_of_the_wrong_kind_are_named_before_the_model_loads(built, capsys, tmp_path, monkeypatch):
    import soundsift.checkpoints

    lib, model, idx = built
    loaded = []
    monkeypatch.setattr(soundsift.checkpoints, "load_model", lambda *a, **k: loaded.append(a))
    script = tmp_path / "table1.sh"
    script.write_text("echo\n")
    cases = [
        (["index", "build", str(lib / "long.wav"), "--model", str(model), "--out", str(tmp_path / "i")],
         "long.wav: is a file, not a folder"),
        (["index", "build", str(tmp_path / "nope"), "--model", str(model), "--out", str(tmp_path / "i")],
         "nope: audio folder not found"),
        (["search", str(script), "rain"], "table1.sh: is a file, not a soundsift index"),
        (["search", str(lib), "rain"], "sounds: not a soundsift index"),
        (["search", str(idx), "--like", str(lib / "animals")], "animals: is a directory, expected an audio file"),
        (["tag", "--model", str(model), str(lib / "animals"), "--labels", "dog"],
         "animals: is a directory, expected an audio file"),
        (["serve", str(script), "--port", str(free_port())], "table1.sh: is a file, not a soundsift index"),
    ]
    for argv, message in cases:
        assert run(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "i").exists() and loaded == []


def test_index_build_of_a_folder_without_audio_is_an_error(built, capsys, tmp_path):
    _, model, _ = built
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no sounds here")
    assert run(["index", "build", str(tmp_path / "docs"), "--model", str(model), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no audio files found in {tmp_path / 'docs'} (extensions: wav, flac" in err[0], err
    assert not (tmp_path / "i").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_a_busy_port_fails_at_once_without_loading_the_model(built, monkeypatch, capsys):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import uvicorn

    import soundsift.search.index as index_module

    _, _, idx = built
    loaded, served = [], []
    monkeypatch.setattr(index_module, "load_searcher", lambda *a, **k: loaded.append(a))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run(["serve", str(idx), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"soundsift: error: port {port} on 127.0.0.1 is already in use; pass --port N "
                   "(or stop the other server)"]
    assert loaded == [] and served == []
    assert run(["serve", str(idx), "--port", "70000"]) == 2
    assert "port 70000 is not a TCP port number" in capsys.readouterr().err and loaded == []
