"""AVSBench S4/MS3 readers against a tiny tree written in the official layout (tests/avs_tree.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from avs_tree import GREY_MASK, LONG_WAV, MODE1_MASK, MS3_VIDEOS, S4_VIDEOS, SHORT_WAV, write_avs_tree, write_csv
from clavs.data.avsbench import (
    AVSBenchFileError,
    AVSBenchMS3,
    AVSBenchS4,
    MetadataError,
    read_ms3_metadata,
    read_s4_metadata,
)
from clavs.data.categories import S4_CATEGORIES

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_avs_tree(tmp_path_factory.mktemp("official"), extra_columns=False, grey_mask=True)


@pytest.fixture(scope="module")
def synth_tree(tmp_path_factory):
    return write_avs_tree(tmp_path_factory.mktemp("extra"), extra_columns=True, seed=1)


def _frames_oracle(frames: list[np.ndarray], normalize: bool = True) -> torch.Tensor:
    x = torch.stack([torch.tensor(f).permute(2, 0, 1).float() / 255.0 for f in frames])
    return (x - MEAN) / STD if normalize else x


def _wav_oracle(wav: np.ndarray) -> torch.Tensor:
    out = torch.zeros(5 * 16000)
    n = min(len(wav), 5 * 16000)
    out[:n] = torch.tensor(wav[:n])
    return out.view(5, 16000)


# ------------------------------------------------------------------------------------ metadata


def test_read_official_csvs(tree):
    s4 = read_s4_metadata(tree.root)
    assert [(r.name, r.category, r.split) for r in s4] == S4_VIDEOS
    assert [r.label for r in s4] == [S4_CATEGORIES.index(c) for _, c, _ in S4_VIDEOS]
    assert [r.start for r in s4] == [10.0 * i for i in range(len(S4_VIDEOS))]
    assert all(r.domain is None and r.sources == () and r.extra == () for r in s4)
    ms3 = read_ms3_metadata(tree.root)
    assert [(r.name, r.split) for r in ms3] == [(n, s) for n, s, _ in MS3_VIDEOS]
    assert all(r.label == -1 and r.category is None and r.start is None and r.sources == () for r in ms3)


def test_read_csvs_with_synthavs_columns(synth_tree):
    s4 = read_s4_metadata(synth_tree.root)
    assert [r.domain for r in s4] == [synth_tree.videos[n].domain for n, _, _ in S4_VIDEOS]
    assert [r.category for r in s4] == [c for _, c, _ in S4_VIDEOS]
    ms3 = read_ms3_metadata(synth_tree.root)
    assert [r.sources for r in ms3] == [s for _, _, s in MS3_VIDEOS]
    assert [r.domain for r in ms3] == [f"m{i}" for i in range(len(MS3_VIDEOS))]
    assert all(r.extra == () and r.label == -1 for r in ms3)


def test_columns_by_position_split_by_name_other_columns_extra(tmp_path):
    # Header names of the positional columns don't matter (the official code reads them by
    # position); the split is found by its header name; unknown columns go to `extra`.
    write_csv(tmp_path / "Single-source" / "s4_meta_data.csv", ["vid", "t0", "cat", "note", "split"],
              [["a1", "3.5", "lawn_mowing", "hello", "val"], ["a2", "", "helicopter", "", "train"]])
    recs = read_s4_metadata(tmp_path)
    assert [(r.name, r.start, r.category, r.split, r.extra) for r in recs] == [
        ("a1", 3.5, "lawn_mowing", "val", (("note", "hello"),)),
        ("a2", None, "helicopter", "train", (("note", ""),)),
    ]
    assert recs[0].label == 22 and recs[1].label == 15


def test_csv_with_bom_and_crlf(tmp_path):
    path = tmp_path / "Multi-sources" / "ms3_meta_data.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("\ufeffname,split\r\nv1,train\r\n\r\nv2,test\r\n".encode("utf-8"))
    assert [(r.name, r.split) for r in read_ms3_metadata(tmp_path)] == [("v1", "train"), ("v2", "test")]


@pytest.mark.parametrize(
    "header, rows, line, fragments",
    [
        (["name", "start", "category", "split"], [["ok", "0", "helicopter", "train"], ["v9", "0", "dog_barkin", "train"]],
         3, ["unknown category 'dog_barkin'", "did you mean 'dog_barking'", "v9"]),
        (["name", "start", "category", "split"], [["v1", "0", "helicopter", "training"]],
         2, ["split 'training' is not one of train/val/test", "v1"]),
        (["name", "start", "category", "split"], [["v1", "0", "helicopter"]],
         2, ["missing column(s) ['split']"]),
        (["name", "start", "category", "split"], [["v1", "zero", "helicopter", "val"]],
         2, ["start 'zero' is not a number"]),
        (["name", "start", "category"], [["v1", "0", "helicopter"]],
         1, ["has no 'split' column"]),
        (["name", "split", "start", "category"], [["v1", "val", "0", "helicopter"]],
         1, ["expected the columns name,start,category,split in this order"]),
    ],
)
def test_bad_s4_csv_names_file_and_row(tmp_path, header, rows, line, fragments):
    csv_path = tmp_path / "Single-source" / "s4_meta_data.csv"
    write_csv(csv_path, header, rows)
    with pytest.raises(MetadataError) as err:
        read_s4_metadata(tmp_path)
    msg = str(err.value)
    assert str(csv_path) in msg and f"line {line}:" in msg
    for fragment in fragments:
        assert fragment in msg


def test_bad_csv_lists_every_bad_row(tmp_path):
    csv_path = tmp_path / "Multi-sources" / "ms3_meta_data.csv"
    write_csv(csv_path, ["name", "split", "sources"],
              [["a", "train", "dog_barking"], ["b", "Train", ""], ["c", "test", "dog_barking|lion"], ["", "val", ""]])
    with pytest.raises(MetadataError) as err:
        read_ms3_metadata(tmp_path)
    msg = str(err.value)
    assert "3 bad row(s)" in msg
    assert "line 3: video 'b': split 'Train'" in msg
    assert "line 4: video 'c': unknown category 'lion'" in msg and "in 'sources'" in msg
    assert "line 5: video '': empty video name" in msg
    assert "line 2" not in msg


def test_missing_csv_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="ms3_meta_data.csv"):
        read_ms3_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Single-source.s4_meta_data\.csv"):
        AVSBenchS4(tmp_path, "train")


# ------------------------------------------------------------------------------------ S4 items


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_s4_items_match_written_files(tree, split):
    ds = AVSBenchS4(tree.root, split, image_size=None, audio="both")
    truths = tree.s4(split)
    assert [r.name for r in ds.records] == [t.name for t in truths]
    assert len(ds) == len(truths)
    for i, truth in enumerate(truths):
        item = ds[i]
        assert item["frames"].shape == (5, 3, 24, 32) and item["frames"].dtype == torch.float32
        torch.testing.assert_close(item["frames"], _frames_oracle(truth.frames), atol=1e-5, rtol=0)
        expected_valid = [True, False, False, False, False] if split == "train" else [True] * 5
        assert item["mask_valid"].tolist() == expected_valid and item["mask_valid"].dtype == torch.bool
        assert item["masks"].shape == (5, 1, 24, 32)
        for k in range(5):
            if truth.masks[k] is None:
                assert not item["masks"][k].any()
            else:
                expected = torch.tensor(truth.masks[k] > 127, dtype=torch.float32)
                assert torch.equal(item["masks"][k, 0], expected)
        assert torch.equal(item["audio_logmel"], truth.logmel) and not item["audio_logmel"].requires_grad
        torch.testing.assert_close(item["audio_wav"], _wav_oracle(truth.wav), atol=0, rtol=0)
        assert item["label"] == S4_CATEGORIES.index(truth.category)
        assert item["category"] == truth.category and item["video_id"] == truth.name and item["index"] == i


def test_s4_train_masks_beyond_frame_one_are_not_read(tree, tmp_path):
    # The official loader reads only <name>_1.png in S4 train; extra mask files must not matter.
    root = tmp_path / "t"
    shutil.copytree(tree.root, root)
    truth = tree.s4("train")[0]
    mask_dir = truth.paths["masks"][0].parent
    Image.fromarray(np.full((24, 32), 255, dtype=np.uint8)).save(mask_dir / f"{truth.name}_2.png")
    item = AVSBenchS4(root, "train", image_size=None, audio=None)[0]
    assert not item["masks"][1:].any()


def test_mask_binarised_above_127(tree):
    ds = AVSBenchS4(tree.root, "val", image_size=None, audio=None)
    truth = tree.videos[GREY_MASK]
    item = ds[[r.name for r in ds.records].index(GREY_MASK)]
    written, read = truth.masks[0], item["masks"][0, 0].numpy()
    assert set(np.unique(read)) <= {0.0, 1.0}
    for value, expected in [(0, 0.0), (100, 0.0), (127, 0.0), (128, 1.0), (200, 1.0), (255, 1.0)]:
        assert (written == value).any(), value
        assert np.all(read[written == value] == expected), value


def test_wav_cut_per_second_padded_and_truncated(tree):
    ds = AVSBenchS4(tree.root, "val", image_size=None, audio="wav")
    item = ds[[r.name for r in ds.records].index(SHORT_WAV)]
    wav = tree.videos[SHORT_WAV].wav
    assert len(wav) == 72000 and "audio_logmel" not in item
    assert torch.equal(item["audio_wav"][4, 8000:], torch.zeros(8000))
    assert torch.equal(item["audio_wav"][4, :8000], torch.tensor(wav[64000:72000]))
    assert torch.equal(item["audio_wav"][1], torch.tensor(wav[16000:32000]))
    ms3 = AVSBenchMS3(tree.root, "val", image_size=None, audio="wav")
    long_wav = tree.videos[LONG_WAV].wav
    assert len(long_wav) > 80000
    assert torch.equal(ms3[0]["audio_wav"].reshape(-1), torch.tensor(long_wav[:80000]))


def test_unnormalised_frames_are_totensor(tree):
    item = AVSBenchS4(tree.root, "test", image_size=None, normalize=False, audio=None)[1]
    truth = tree.s4("test")[1]
    torch.testing.assert_close(item["frames"], _frames_oracle(truth.frames, normalize=False), atol=0, rtol=0)


def test_resizing_frames_bilinear_masks_nearest(tree):
    truth = tree.s4("val")[0]
    up = AVSBenchS4(tree.root, "val", image_size=(48, 64), normalize=False, audio=None)[0]
    assert up["frames"].shape == (5, 3, 48, 64) and up["masks"].shape == (5, 1, 48, 64)
    # Integer upscaling with nearest: every mask pixel becomes a 2x2 block.
    for k in range(5):
        block = np.repeat(np.repeat(truth.masks[k] > 127, 2, axis=0), 2, axis=1)
        assert np.array_equal(up["masks"][k, 0].numpy(), block.astype(np.float32))
    # Bilinear: an independent implementation (torch) agrees up to uint8 rounding.
    raw = _frames_oracle(truth.frames, normalize=False)
    torch.testing.assert_close(up["frames"], F.interpolate(raw, size=(48, 64), mode="bilinear", align_corners=False),
                               atol=1.01 / 255, rtol=0)
    down = AVSBenchS4(tree.root, "val", image_size=16, normalize=False, audio=None)[0]
    assert down["frames"].shape == (5, 3, 16, 16)
    ref = F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert (down["frames"] - ref).abs().max() <= 2.01 / 255
    assert set(torch.unique(down["masks"]).tolist()) <= {0.0, 1.0}
    default = AVSBenchS4(tree.root, "val", audio=None)[0]
    assert default["frames"].shape == (5, 3, 224, 224) and default["masks"].shape == (5, 1, 224, 224)


# ------------------------------------------------------------------------------------ MS3 items


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_ms3_items_match_written_files(tree, split):
    ds = AVSBenchMS3(tree.root, split, image_size=None, audio="both")
    truths = tree.ms3(split)
    assert [r.name for r in ds.records] == [t.name for t in truths]
    for i, truth in enumerate(truths):
        item = ds[i]
        torch.testing.assert_close(item["frames"], _frames_oracle(truth.frames), atol=1e-5, rtol=0)
        assert item["mask_valid"].tolist() == [True] * 5
        expected = torch.stack([torch.tensor(m > 127, dtype=torch.float32) for m in truth.masks]).unsqueeze(1)
        assert torch.equal(item["masks"], expected)
        assert item["masks"].sum() > 0
        assert torch.equal(item["audio_logmel"], truth.logmel)
        assert item["label"] == -1 and item["category"] == "" and item["video_id"] == truth.name
    assert MODE1_MASK in [t.name for t in tree.ms3("test")]


def test_ms3_frames_need_mp4_infix(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree.root, root)
    truth = tree.ms3("val")[0]
    frame = root / truth.paths["frames"][2].relative_to(tree.root)
    assert frame.name == f"{truth.name}.mp4_3.png" and frame.parent.name == truth.name
    assert frame.parent.parent.name == "visual_frames"  # no split level for MS3 frames
    frame.rename(frame.with_name(f"{truth.name}_3.png"))
    with pytest.raises(AVSBenchFileError, match=r"frame not found: .*ms3V\.mp4_3\.png"):
        AVSBenchMS3(root, "val", audio=None)[0]


def test_unreadable_files_are_named(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree.root, root)
    truth = tree.s4("test")[0]
    frame = root / truth.paths["frames"][1].relative_to(tree.root)
    good = frame.read_bytes()
    frame.write_bytes(good[:100])
    ds = AVSBenchS4(root, "test", image_size=None, audio=None)
    with pytest.raises(AVSBenchFileError, match=rf"cannot decode frame .*{truth.name}_2\.png"):
        ds[0]
    frame.write_bytes(good)
    (root / truth.paths["pkl"][0].relative_to(tree.root)).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{truth.name}\.pkl"):
        AVSBenchS4(root, "test", image_size=None, audio="logmel")[0]


# ------------------------------------------------------------------------------------ dataset API


def test_subset_and_records(tree):
    ds = AVSBenchS4(tree.root, "train", image_size=None, audio=None)
    sub = ds.subset([2, 0])
    assert [r.name for r in sub.records] == [ds.records[2].name, ds.records[0].name]
    assert [sub[i]["video_id"] for i in range(2)] == [ds.records[2].name, ds.records[0].name]
    assert [sub[i]["index"] for i in range(2)] == [0, 1]
    assert sub.size_hw is None and sub.audio is None and sub.split == "train"
    explicit = AVSBenchS4(tree.root, "train", image_size=None, audio=None, records=ds.records[1:2])
    assert len(explicit) == 1 and explicit[0]["video_id"] == ds.records[1].name
    val_records = AVSBenchS4(tree.root, "val").records
    with pytest.raises(ValueError, match="records of another split"):
        AVSBenchS4(tree.root, "train", records=val_records)
    with pytest.raises(ValueError, match="without a category"):
        AVSBenchS4(tree.root, "train", records=AVSBenchMS3(tree.root, "train").records)


def test_argument_validation(tree):
    with pytest.raises(ValueError, match="split"):
        AVSBenchS4(tree.root, "training")
    with pytest.raises(ValueError, match="audio"):
        AVSBenchMS3(tree.root, "train", audio="mel")
    item = AVSBenchMS3(tree.root, "train", image_size=None, audio=None)[0]
    assert "audio_logmel" not in item and "audio_wav" not in item


def test_dataloader_collates(synth_tree):
    ds = AVSBenchS4(synth_tree.root, "train", image_size=(24, 32), audio="both")
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["frames"].shape == (2, 5, 3, 24, 32)
    assert batch["masks"].shape == (2, 5, 1, 24, 32)
    assert batch["mask_valid"].shape == (2, 5)
    assert batch["audio_logmel"].shape == (2, 5, 1, 96, 64)
    assert batch["audio_wav"].shape == (2, 5, 16000)
    assert batch["label"].tolist() == [S4_CATEGORIES.index(c) for _, c, s in S4_VIDEOS if s == "train"][:2]
    assert batch["video_id"] == [n for n, _, s in S4_VIDEOS if s == "train"][:2]
