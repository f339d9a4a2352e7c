"""The memory-mapped teacher store: round trip, C_hat against a naive reference, lazy open, damage
detection, atomic writes, alignment, and old .safetensors files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import soundsift.teacher_store as corr
from soundsift.correspondences import (
    StringTable,
    TeacherEmbeddings,
    TeacherEnsemble,
    write_teacher_store,
)
from soundsift.errors import AlignmentError, TeacherFileError

CLIPS = ["dog 1.wav", "rain, heavy.wav", "ünïcode.flac", "x.wav", "日本.wav"]
CAPTIONS = ['a dog barks, then "stops"', "a dog", "rain falls", "heavy rain", "birds", "é", "", "noise", "雨"]
CAPTION_CLIP = [0, 0, 1, 1, 2, 2, 3, 3, 4]


def teacher(seed: int, dim: int = 16) -> TeacherEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    return TeacherEmbeddings(
        clip_ids=list(CLIPS), audio=torch.randn(len(CLIPS), dim, generator=gen) * 3,
        caption_texts=list(CAPTIONS), caption_clip=torch.tensor(CAPTION_CLIP),
        captions=torch.randn(len(CAPTIONS), dim, generator=gen), meta={"model_identity": f"tiny-{seed}"},
    )


def naive_c_hat(teachers, clip_index, caption_index) -> np.ndarray:
    """float64, one entry at a time, from the stored (float16) rows."""
    out = np.zeros((len(clip_index), len(caption_index)))
    for t in teachers:
        a = np.load(f"{t.source}/audio.npy").astype(np.float64)
        c = np.load(f"{t.source}/captions.npy").astype(np.float64)
        for i, ci in enumerate(clip_index):
            for j, cj in enumerate(caption_index):
                out[i, j] += a[ci] @ c[cj] / (np.linalg.norm(a[ci]) * np.linalg.norm(c[cj]))
    return out / len(teachers)


def test_round_trip_float16(tmp_path):
    t = teacher(1)
    path = t.save(tmp_path / "t1.teachers")
    assert path.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["t1.teachers"]  # no temp dir left
    back = TeacherEmbeddings.load(path)
    assert back.clip_ids == CLIPS and back.caption_texts == CAPTIONS and CAPTIONS == back.caption_texts
    assert list(back.clip_ids) == CLIPS and back.caption_texts[-1] == "雨" and back.caption_texts[2:4] == CAPTIONS[2:4]
    assert back.caption_clip.tolist() == CAPTION_CLIP and back.dim == 16
    assert back.audio.dtype == torch.float16
    torch.testing.assert_close(back.audio.float(), t.audio, atol=1e-3, rtol=0)
    torch.testing.assert_close(back.captions.float(), t.captions, atol=1e-3, rtol=0)
    assert back.meta["model_identity"] == "tiny-1" and back.meta["soundsift_version"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "soundsift.teacher_store" and manifest["format_version"] == 1
    assert manifest["model_identity"] == "tiny-1" and manifest["dtype"] == "float16"
    assert (manifest["n_clips"], manifest["n_captions"], manifest["dim"]) == (5, 9, 16)
    assert manifest["split"]["caption_texts"]["sha256"] == StringTable.from_strings(CAPTIONS).digest
    import hashlib

    for name, entry in manifest["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == entry["sha256"]
    back.verify()
    # a float16 teacher round-trips exactly; a store re-saved as .safetensors loads the same
    again = TeacherEmbeddings.load(back.save(tmp_path / "again.teachers"))
    assert torch.equal(again.audio, back.audio) and torch.equal(again.captions, back.captions)
    old = TeacherEmbeddings.load(back.save(tmp_path / "old.safetensors"))
    assert torch.equal(old.audio, back.audio) and old.caption_texts == CAPTIONS


def test_batch_similarity_matches_naive_float64(tmp_path):
    teachers = [TeacherEmbeddings.load(teacher(s, dim=d).save(tmp_path / f"t{s}")) for s, d in ((1, 16), (2, 8), (3, 32))]
    ens = TeacherEnsemble(teachers)
    caption_index = torch.tensor([5, 0, 1, 8, 3, 0])
    clip_index = ens.caption_clip[caption_index]
    got = ens.batch_similarity(clip_index, caption_index, device="cpu")
    assert got.dtype == torch.float32 and got.shape == (6, 6)
    np.testing.assert_allclose(got.numpy(), naive_c_hat(teachers, clip_index.tolist(), caption_index.tolist()), atol=1e-5)
    torch.testing.assert_close(got, ens.full_similarity()[clip_index][:, caption_index])


def test_open_is_lazy(tmp_path, monkeypatch):
    path = teacher(4).save(tmp_path / "lazy")
    opened = []
    real = corr._open_array
    monkeypatch.setattr(corr, "_open_array", lambda p, entry: opened.append(p.name) or real(p, entry))
    t = TeacherEmbeddings.load(path)
    ens = TeacherEnsemble([t, TeacherEmbeddings.load(path)])  # alignment on manifest digests
    t.check_alignment(CLIPS, CAPTIONS, CAPTION_CLIP)  # the split's digests against the manifest's
    assert len(ens.clip_ids) == 5 and len(ens.caption_texts) == 9 and t.dim == 16
    assert opened == []  # nothing read so far
    ens.batch_similarity(torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert sorted(set(opened)) == ["audio.npy", "captions.npy"]
    assert t.caption_texts[0] == CAPTIONS[0] and "caption_texts.utf8.npy" in opened


def test_damaged_files_are_named(tmp_path):
    path = teacher(5).save(tmp_path / "t5")
    data = (path / "captions.npy").read_bytes()
    (path / "captions.npy").write_bytes(data[:-10])
    with pytest.raises(TeacherFileError, match=r"t5/captions\.npy: \d+ bytes, the manifest says \d+ \(truncated") as err:
        TeacherEmbeddings.load(path)
    assert "\n" not in str(err.value)
    # same size, flipped bytes: the checksum finds it; a NaN row is caught by the lookup that reads it
    corrupt = bytearray(data)
    row_start = len(data) - 9 * 16 * 2
    corrupt[row_start + 3 * 32 : row_start + 3 * 32 + 2] = np.array([np.nan], dtype="<f2").tobytes()
    (path / "captions.npy").write_bytes(bytes(corrupt))
    t = TeacherEmbeddings.load(path)
    with pytest.raises(TeacherFileError, match=r"t5/captions\.npy: checksum mismatch"):
        t.verify()
    with pytest.raises(TeacherFileError, match=r"t5/captions\.npy: checksum mismatch"):
        TeacherEmbeddings.load(path, verify=True)
    ens = TeacherEnsemble([t])
    ens.batch_similarity(torch.tensor([0]), torch.tensor([2]))  # other rows are fine
    with pytest.raises(TeacherFileError, match=r"t5/captions\.npy: row 3 contains NaN"):
        ens.batch_similarity(torch.tensor([0]), torch.tensor([2, 3]))
    (path / "audio.npy").write_bytes(b"x" * (path / "audio.npy").stat().st_size)
    with pytest.raises(TeacherFileError, match=r"t5/audio\.npy: not a readable \.npy"):
        TeacherEmbeddings.load(path).audio  # noqa: B018 (the first read of the data)
    (path / "clip_ids.ends.npy").unlink()
    with pytest.raises(TeacherFileError, match=r"t5/clip_ids\.ends\.npy: missing"):
        TeacherEmbeddings.load(path)
    (path / "manifest.json").write_text("{}")
    with pytest.raises(TeacherFileError, match=r"t5/manifest\.json: not a soundsift teacher store"):
        TeacherEmbeddings.load(path)
    with pytest.raises(TeacherFileError, match="no such teacher-embedding file or store"):
        TeacherEmbeddings.load(tmp_path / "nothing")


def test_write_is_atomic(tmp_path):
    t = teacher(6)

    def chunks():
        yield t.captions[:4]
        raise KeyboardInterrupt  # killed half-way through the captions

    with pytest.raises(KeyboardInterrupt):
        write_teacher_store(tmp_path / "s", CLIPS, CAPTIONS, CAPTION_CLIP, t.audio, chunks(), dim=16)
    assert list(tmp_path.iterdir()) == []  # no store, no temporary directory
    # over an existing store: an interrupted rewrite leaves the old store whole
    path = t.save(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        write_teacher_store(path, CLIPS, CAPTIONS, CAPTION_CLIP, t.audio, chunks(), dim=16)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    TeacherEmbeddings.load(path, verify=True)
    teacher(7).save(path)  # a finished rewrite replaces it
    assert TeacherEmbeddings.load(path, verify=True).meta["model_identity"] == "tiny-7"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    bad = t.captions.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(TeacherFileError, match="captions row 2 contains NaN"):
        write_teacher_store(tmp_path / "nan", CLIPS, CAPTIONS, CAPTION_CLIP, t.audio, bad)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(TeacherFileError, match="a file; name a .safetensors file"):
        t.save(tmp_path / "file")


def test_alignment_refuses_another_split(tmp_path):
    t = TeacherEmbeddings.load(teacher(8).save(tmp_path / "t8"))
    shuffled = list(CAPTIONS)
    shuffled[2], shuffled[3] = shuffled[3], shuffled[2]
    with pytest.raises(AlignmentError, match=r"t8 .*caption_texts: index 2 differs: teacher 'rain falls' vs split 'heavy rain'"):
        t.check_alignment(CLIPS, shuffled)
    with pytest.raises(AlignmentError, match="clip_ids: the teacher has 5 entries, the split has 6"):
        t.check_alignment(CLIPS + ["extra.wav"], CAPTIONS)
    with pytest.raises(AlignmentError, match="clip_ids: index 4 differs"):
        t.check_alignment(CLIPS[:4] + ["other.wav"], CAPTIONS)
    with pytest.raises(AlignmentError, match="caption_clip: index 8 differs: teacher 4 vs split 3"):
        t.check_alignment(CLIPS, CAPTIONS, CAPTION_CLIP[:8] + [3])
    other = teacher(9)
    other.caption_texts = CAPTIONS[:-1] + ["rain"]
    other.caption_clip = CAPTION_CLIP
    with pytest.raises(AlignmentError, match="caption_texts: index 8 differs"):
        TeacherEnsemble([t, other])
    old = TeacherEmbeddings.load(teacher(10).save(tmp_path / "t10.safetensors"))
    TeacherEnsemble([t, old])  # a store and an old file of the same split


def test_old_safetensors_files_still_load(tmp_path):
    """A file in the original layout (written as the code before the store did) loads as before."""
    from safetensors.torch import save_file

    t = teacher(11)

    def enc(strings):
        blobs = [s.encode() for s in strings]
        return torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8).clone(), torch.tensor([len(b) for b in blobs]).cumsum(0)

    (cd, ce), (td, te) = enc(CLIPS), enc(CAPTIONS)
    path = tmp_path / "old.safetensors"
    save_file({"audio": t.audio.half(), "captions": t.captions.half(), "caption_clip": t.caption_clip,
               "clip_ids_utf8": cd, "clip_ids_ends": ce, "caption_texts_utf8": td, "caption_texts_ends": te},
              str(path), metadata={"format": "soundsift.teacher_embeddings", "format_version": "1",
                                   "meta": json.dumps({"model_identity": "old"})})
    back = TeacherEmbeddings.load(path)
    assert back.clip_ids == CLIPS and back.caption_texts == CAPTIONS and back.meta["model_identity"] == "old"
    assert torch.equal(back.audio, t.audio.half())
    back.check_alignment(CLIPS, CAPTIONS, CAPTION_CLIP)
    store = TeacherEmbeddings.load(back.save(tmp_path / "converted"))  # conversion: load + save
    assert torch.equal(store.audio, back.audio)
    TeacherEnsemble([back, store]).batch_similarity(torch.tensor([0, 4]), torch.tensor([1, 8]))


def test_string_table():
    table = StringTable.from_strings(CAPTIONS)
    assert len(table) == 9 and table[-1] == "雨" and table == CAPTIONS and table != CAPTIONS[:-1]
    assert table != ["x"] * 9 and table.tolist() == CAPTIONS and "noise" in table
    empty = StringTable.from_strings([])
    assert len(empty) == 0 and empty == [] and empty.digest == StringTable.from_strings([]).digest
    assert StringTable.from_strings(["ab", "c"]).digest != StringTable.from_strings(["a", "bc"]).digest
    with pytest.raises(IndexError):
        table[9]
