"""``soundsift evaluate --model salsa``: the authors' released checkpoint, fetched as its five parts from
a local HTTP server (here a tiny checkpoint in salsa's exact key layout), joined, cached, evaluated."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.checkpoints import salsa  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402
from test_interop import HPARAMS, TINY_TEXT, lightning_ckpt, to_salsa_layout  # noqa: E402


def tiny_salsa_config(hparams=None) -> dict:
    """salsa's architecture at test size; the text tower's vocabulary is that of the tokenizer it gets."""
    from transformers import AutoTokenizer

    from soundsift.encoders.text import minilm_path

    config = salsa.SALSA_CONFIG | {"embed_dim": 16}
    config = json.loads(json.dumps(config))
    config["audio_encoder"]["size"] = "tiny"
    vocab = len(AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True))
    config["text_encoder"]["config_overrides"] = {**TINY_TEXT, "vocab_size": vocab}
    return config


@pytest.fixture()
def served_parts(tmp_path, monkeypatch):
    """The tiny checkpoint cut into five parts, served on 127.0.0.1; salsa's part URLs point there."""
    monkeypatch.setattr(salsa, "salsa_config", tiny_salsa_config)
    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    torch.manual_seed(0)
    model = DualEncoder.from_config(tiny_salsa_config())
    blob_path = tmp_path / "full.ckpt"
    torch.save(lightning_ckpt(to_salsa_layout(model), HPARAMS), blob_path)
    blob = blob_path.read_bytes()
    served = tmp_path / "served"
    served.mkdir()
    cut = [len(blob) * i // 5 for i in range(6)]
    for i in range(5):
        (served / f"passt_roberta.{i + 1}.ckpt").write_bytes(blob[cut[i]:cut[i + 1]])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(salsa, "SALSA_CHECKPOINT_PARTS", tuple(f"{base}/passt_roberta.{i}.ckpt" for i in range(1, 6)))
    yield blob, server
    server.shutdown()


def test_evaluate_the_released_model_by_name(served_parts, tmp_path, capsys):
    blob, server = served_parts
    data = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["-q", "evaluate", "--model", "salsa", "--data-root", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["text_to_audio"]) == {"mAP@10", "R@1", "R@5", "R@10"}
    joined = tmp_path / "cache" / salsa.SALSA_CHECKPOINT_FILENAME
    assert joined.read_bytes() == blob  # the parts, joined in order
    assert not list((tmp_path / "cache").glob("passt_roberta.[1-5].ckpt"))  # parts removed once joined
    server.shutdown()  # from now on only the cache can serve it
    assert main(["-q", "evaluate", "--model", "salsa", "--data-root", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["text_to_audio"] == result["text_to_audio"]


def test_a_pinned_checksum_is_enforced(served_parts, monkeypatch):
    monkeypatch.setattr(salsa, "SALSA_CHECKPOINT_SHA256", "0" * 64)
    from soundsift.errors import ChecksumError

    with pytest.raises(ChecksumError, match="expected 0000"):
        salsa.download_salsa_checkpoint(progress=False)


def test_offline_the_message_says_where_the_parts_go_or_which_file_to_name(served_parts, tmp_path, capsys):
    """Not "pass checkpoint=PATH" (evaluate has no such option), nor one part's path as if it were the model."""
    blob, server = served_parts
    server.shutdown()
    server.server_close()  # nothing listens any more: the download fails at once, as offline
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "passt_roberta.1.ckpt").write_bytes(b"part one, fetched earlier")
    assert main(["-q", "evaluate", "--model", "salsa", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint=PATH" not in err, err
    assert "comes in 5 parts" in err and f"into {cache}," in err
    assert "download passt_roberta.2.ckpt, passt_roberta.3.ckpt, passt_roberta.4.ckpt, passt_roberta.5.ckpt " in err
    assert "--model passt_roberta.ckpt" in err and "init_from=passt_roberta.ckpt" in err
    assert not list(cache.glob("*.lock"))  # the failed download leaves no lock file behind


def test_training_can_start_from_the_joined_file(served_parts, tmp_path):
    """init_from=passt_roberta.ckpt, as the offline message suggests, reads the salsa checkpoint."""
    from soundsift.training.run import read_init

    blob, _ = served_parts
    joined = tmp_path / "passt_roberta.ckpt"
    joined.write_bytes(blob)
    init = read_init(str(joined))
    assert init["config"]["embed_dim"] == 16 and "audio_proj.weight" in init["state_dict"]
