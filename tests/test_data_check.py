"""`check_tree` / `check_main` on clean and deliberately broken AVSBench trees (tests/avs_tree.py)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from avs_tree import write_avs_tree
from clavs.data.check import Problem, check_main, check_tree


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_avs_tree(tmp_path_factory.mktemp("clean"), grey_mask=False, odd_wav_lengths=False)


@pytest.fixture
def tree(clean, tmp_path):
    """A fresh copy of the clean tree to break; paths of the copy via `at(path)`."""
    root = tmp_path / "avs"
    shutil.copytree(clean.root, root)
    clean_root = clean.root

    class Copy:
        videos = clean.videos

        @staticmethod
        def at(path: Path) -> Path:
            return root / Path(path).relative_to(clean_root)

    Copy.root = root
    return Copy


def _errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def test_clean_tree_has_no_problems(clean, capsys):
    assert check_tree(clean.root, progress=False) == []
    assert check_tree(write_avs_tree(clean.root.parent / "extra", extra_columns=True, odd_wav_lengths=False).root,
                      progress=False) == []
    assert check_main(clean.root) == 0
    out = capsys.readouterr().out
    assert "OK: 0 error(s), 0 warning(s)" in out
    assert "S4: 3 train / 2 val / 2 test" in out and "MS3: 2 train / 1 val / 1 test" in out


def test_acceptance_truncated_png_missing_wav_and_row_without_files(tree, capsys):
    frame = tree.at(tree.videos["s4heliV"].paths["frames"][3])
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    wav = tree.at(tree.videos["ms3A"].paths["wav"][0])
    wav.unlink()
    csv_path = tree.root / "Single-source" / "s4_meta_data.csv"
    with open(csv_path, "a") as f:
        f.write("ghost,0,helicopter,test\n")

    problems = check_tree(tree.root, progress=False)
    assert len(problems) == 3 and all(p.severity == "error" for p in problems), problems
    by_path = {p.path: p for p in problems}
    assert "truncated" in by_path[frame].message
    assert "wav file missing" in by_path[wav].message and "ms3_meta_data.csv line 2" in by_path[wav].message
    ghost_dir = tree.root / "Single-source/s4_data/visual_frames/test/helicopter/ghost"
    ghost = by_path[ghost_dir].message
    assert "s4_meta_data.csv line 9, video 'ghost'" in ghost and "none of its 12 files exist" in ghost
    assert f"masks {tree.root / 'Single-source/s4_data/gt_masks/test/helicopter/ghost'}/{{ghost_1.png" in ghost
    assert "(folder missing)" in ghost
    for name in ("ghost_1.png", "ghost_5.png", "audio_wav/test/helicopter/ghost.wav",
                 "audio_log_mel/test/helicopter/ghost.pkl"):
        assert name in ghost

    assert check_main(tree.root) != 0
    out = capsys.readouterr().out
    for p in (frame, wav, ghost_dir):
        assert f"{p}: " in out
    assert "FAILED: 3 error(s), 0 warning(s)" in out.splitlines()[-1]


def test_png_damage_is_caught(tree):
    v = tree.videos["s4dogT"]
    cut_end = tree.at(v.paths["frames"][0])            # only the IEND chunk lost: Pillow still decodes it
    cut_end.write_bytes(cut_end.read_bytes()[:-12])
    flipped = tree.at(v.paths["masks"][2])             # one byte of compressed data flipped
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x5A
    flipped.write_bytes(bytes(data))
    not_png = tree.at(v.paths["frames"][4])
    not_png.write_bytes(b"GIF89a not really")
    bad_crc = tree.at(v.paths["frames"][2])           # the image decodes; only the chunk CRC is wrong
    data = bytearray(bad_crc.read_bytes())
    data[-13] ^= 0x01                                  # last CRC byte of the chunk before IEND
    bad_crc.write_bytes(bytes(data))
    with Image.open(bad_crc) as im:
        im.load()                                      # Pillow's decode alone does not notice
    problems = check_tree(tree.root, progress=False)
    assert {p.path for p in problems} == {cut_end, flipped, not_png, bad_crc}
    assert all(p.severity == "error" for p in problems)


def test_mask_checks(tree):
    vids = tree.videos
    rgb = tree.at(vids["s4dogV"].paths["masks"][1])
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(rgb)
    small = tree.at(vids["s4dogV"].paths["masks"][2])
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(small)
    grey = tree.at(vids["ms3B"].paths["masks"][0])
    Image.fromarray(np.full((24, 32), 100, np.uint8)).save(grey)
    problems = {p.path: p for p in check_tree(tree.root, progress=False)}
    assert set(problems) == {rgb, small, grey}
    assert problems[rgb].severity == "error" and "mode 'RGB'" in problems[rgb].message
    assert problems[small].severity == "error" and "16x12 but the video's frames are 32x24" in problems[small].message
    assert problems[grey].severity == "warning" and "768 pixels with grey levels 100" in problems[grey].message


def test_frame_size_checks(tree):
    odd = tree.at(tree.videos["ms3T"].paths["frames"][1])
    Image.fromarray(np.zeros((24, 30, 3), np.uint8)).save(odd)
    other = tree.videos["s4heliA"]                    # a whole video at another size: frames and its mask
    for path in other.paths["frames"]:
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tree.at(path))
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tree.at(other.paths["masks"][0]))
    problems = check_tree(tree.root, progress=False)
    assert [(p.path, p.severity) for p in problems] == [
        (odd.parent, "error"),
        (tree.at(other.paths["frames"][0]).parent, "warning"),
    ]
    assert "ms3T.mp4_2.png 30x24" in problems[0].message
    assert "64x48 while 6 of 7 S4 videos have 32x24" in problems[1].message


def test_audio_checks(tree):
    vids = tree.videos
    wav44 = tree.at(vids["s4dogA"].paths["wav"][0])
    sf.write(wav44, np.zeros(44100 * 5, np.float32), 44100)
    stereo = tree.at(vids["s4dogB"].paths["wav"][0])
    sf.write(stereo, np.zeros((16000 * 5, 2), np.float32), 16000)
    short = tree.at(vids["ms3V"].paths["wav"][0])
    sf.write(short, np.zeros(16000 * 3, np.float32), 16000)
    garbage_wav = tree.at(vids["ms3T"].paths["wav"][0])
    garbage_wav.write_bytes(b"RIFF....WAVEjunk")
    shape = tree.at(vids["s4heliA"].paths["pkl"][0])
    with open(shape, "wb") as f:
        pickle.dump(torch.zeros(5, 1, 96, 32, requires_grad=True), f)
    nan = tree.at(vids["s4dogV"].paths["pkl"][0])
    with open(nan, "wb") as f:
        pickle.dump(torch.full((5, 1, 96, 64), float("nan")), f)
    not_tensor = tree.at(vids["s4heliT"].paths["pkl"][0])
    with open(not_tensor, "wb") as f:
        pickle.dump({"a": 1}, f)
    broken = tree.at(vids["ms3A"].paths["pkl"][0])
    broken.write_bytes(b"\x80\x04not a pickle")
    problems = {p.path: p for p in check_tree(tree.root, progress=False)}
    expected = {wav44: ("error", "sample rate 44100 Hz"), stereo: ("warning", "2 channels"),
                short: ("warning", "lasts 3.000 s"), garbage_wav: ("error", "wav does not read"),
                shape: ("error", "(5, 1, 96, 32)"), nan: ("error", "NaN"), not_tensor: ("error", "dict"),
                broken: ("error", "cannot unpickle")}
    assert set(problems) == set(expected)
    for path, (severity, fragment) in expected.items():
        assert problems[path].severity == severity and fragment in problems[path].message, problems[path]
        assert str(path) not in problems[path].message  # named once, by the path


def test_missing_folders_are_grouped(tree):
    v = tree.videos["s4dogT"]
    mask_dir = tree.at(v.paths["masks"][0]).parent
    shutil.rmtree(mask_dir)
    one_frame = tree.at(tree.videos["ms3B"].paths["frames"][4])
    one_frame.unlink()
    problems = check_tree(tree.root, progress=False)
    assert [p.path for p in problems] == [mask_dir, one_frame]
    assert "all 5 masks missing (folder missing)" in problems[0].message
    assert "s4dogT_1.png" in problems[0].message and "s4dogT_5.png" in problems[0].message
    assert "ms3_meta_data.csv line 3, video 'ms3B': frames file missing" in problems[1].message


def test_csv_problems_are_reported_with_the_rest(tree, capsys):
    s4_csv = tree.root / "Single-source" / "s4_meta_data.csv"
    with open(s4_csv, "a") as f:
        f.write("bad1,0,helicoptr,test\nbad2,0,helicopter,exam\ns4dogA,5,dog_barking,train\n")
    (tree.root / "Multi-sources" / "ms3_meta_data.csv").unlink()
    missing_wav = tree.at(tree.videos["s4dogV"].paths["wav"][0])
    missing_wav.unlink()
    problems = check_tree(tree.root, progress=False)
    lines = [str(p) for p in problems]
    assert lines[0].startswith(f"{s4_csv}: line 9: video 'bad1': unknown category 'helicoptr'")
    assert lines[1].startswith(f"{s4_csv}: line 10: video 'bad2': split 'exam'")
    assert lines[2].startswith(f"{s4_csv}: line 11: video 's4dogA' duplicates line 2")
    assert lines[3] == f"{tree.root / 'Multi-sources' / 'ms3_meta_data.csv'}: metadata CSV missing"
    assert lines[4].startswith(f"{missing_wav}: s4_meta_data.csv line 5, video 's4dogV': wav file missing")
    assert len(problems) == 5
    assert check_main(tree.root) == 1
    assert "FAILED: 5 error(s)" in capsys.readouterr().out


def test_bad_root(tmp_path, clean):
    problems = check_tree(tmp_path / "nowhere", progress=False)
    assert len(problems) == 1 and problems[0].path == tmp_path / "nowhere" and "does not exist" in problems[0].message
    wrapper = tmp_path / "wrap"
    shutil.copytree(clean.root, wrapper / "avsbench_data")
    problems = check_tree(wrapper, progress=False)
    assert len(problems) == 1 and f"did you mean {wrapper / 'avsbench_data'}?" in problems[0].message


def test_progress_bar_and_threads_give_same_result(tree):
    (tree.at(tree.videos["s4dogT"].paths["pkl"][0])).unlink()
    serial = check_tree(tree.root, progress=False, workers=1)
    assert len(serial) == 1
    assert check_tree(tree.root, progress=True, workers=4) == serial
