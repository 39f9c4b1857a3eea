"""Training and evaluation on many clips: several `--video` values, folders of video files and
globs give clips from every sequence, split by time per sequence; frames are decoded as they are
needed, with a bound on those held; a corrupt file is named before any work."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import nas.searching.pipeline
import nas.student.evaluate
from nas.cli import main
from nas.core.errors import NasError
from nas.data import load_frames, open_videos, split_clips, split_sequences
from nas.data.samples import default_videos
from nas.data.video_file import VideoFile
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.student.build import build_student
from nas.student.evaluate import evaluate
from tests.conftest import TINY_SEARCH, uniform_spec

SIZE = (32, 48)
LENGTHS = {"a.mp4": 20, "b.mp4": 30}  # two sequences of different lengths


def write_video(path: Path, frames: int, *, seed: int = 0, gop: int = 12) -> Path:
    """A small H.264 (or MPEG-4) file of moving noise, a key frame every `gop` frames."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (SIZE[0], SIZE[1] * 2, 3), dtype=np.uint8)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for t in range(frames):
            image = np.ascontiguousarray(base[:, t % SIZE[1] : t % SIZE[1] + SIZE[1]])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for seed, (name, frames) in enumerate(LENGTHS.items()):
        write_video(folder / name, frames, seed=seed)
    return folder


def _forms(folder: Path) -> dict[str, list[str]]:
    return {
        "two --video": [str(folder / name) for name in LENGTHS],
        "folder": [str(folder)],
        "glob": [str(folder / "*.mp4")],
    }


@pytest.mark.parametrize("form", ["two --video", "folder", "glob"])
def test_clips_come_from_every_sequence_split_by_time(clips_dir, form):
    videos = _forms(clips_dir)[form]
    overrides = {"budget": "1TFLOPs", "video": videos, "max_frames": 100}
    run = prepare(SearchOptions(**(TINY_SEARCH | overrides)))
    names = [s.name for s in run.train.sequences]
    assert names == [str(clips_dir / name) for name in LENGTHS]  # unique, where they came from
    # 20 frames: val the last 4 (20%), 3 dropped (K), 13 train; 30 frames: 6, 3 and 21.
    assert run.train.ranges == (range(0, 13), range(20, 41))
    assert run.val.ranges == (range(16, 20), range(44, 50))
    batch = run.train.sample(64, generator=torch.Generator().manual_seed(0))
    for ranges in [run.train.ranges]:
        hits = [
            sum(k in r and t in r for k, t in zip(batch.key_index, batch.t_index, strict=True))
            for r in ranges
        ]
        assert sum(hits) == 64 and min(hits) > 0  # inside one training range, and every one
    val_t = {int(t) for b in run.val.validation_batches(4) for t in b.t_index}
    assert val_t == {17, 18, 45, 46, 48, 49}  # keys at 16, 19, 44, 47 of the last 20%
    # the frames are those decoding everything would give, fitted to the input size
    stack = load_frames(open_videos(videos), size=run.size)
    assert torch.equal(batch.key, stack.frames[batch.key_index])
    assert torch.equal(batch.frame, stack.frames[batch.t_index])
    assert run.options.video == videos
    spec = make_spec(
        run.teacher,
        run.layers,
        {p: "full" for p in run.macs.candidates},
        run.macs,
        run.budget,
        run.size,
        run.options,
        {},
    )
    assert spec.search.video == videos


def test_one_string_and_the_teachers_default():
    assert SearchOptions(video="sample:bikes").video == ["sample:bikes"]  # old config.json
    assert SearchOptions().video is None
    assert default_videos("prob_map") == ("sample:bikes", "sample:carphone", "sample:bigbuckbunny")
    assert default_videos("pixel_logits") == ("sample:bikes",)


def test_repeated_names_are_made_unique_and_globs_must_match(clips_dir, tmp_path):
    a = str(clips_dir / "a.mp4")
    video = open_videos([a, a])
    assert [s.name for s in video.sequences] == [a, f"{a}#2"]
    with pytest.raises(NasError, match=r"no file matches '.*nothing\*\.mp4'"):
        open_videos([str(tmp_path / "nothing*.mp4")])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_video(mixed / "c.mp4", 8)
    Path(mixed / "f.png").write_bytes(b"")
    with pytest.raises(NasError, match="both frames and video files"):
        open_videos([str(mixed)])


def test_corrupt_file_in_a_folder_is_one_line_exit_2_before_any_work(
    clips_dir, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "good.mp4").write_bytes((clips_dir / "a.mp4").read_bytes())
    (folder / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(4096))

    def no_work(*args, **kwargs):
        raise AssertionError("the teacher was loaded before the videos were checked")

    monkeypatch.setattr(nas.searching.pipeline, "load_teacher", no_work)
    out = tmp_path / "run"
    args = ["search", "--teacher", "tests.conftest:build_tiny", "--budget", "3MFLOPs"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--video", str(folder), "--input-size", "64x96", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(folder / "bad.mp4") in err
    assert not out.exists()


def test_memory_stays_flat_while_a_long_video_streams():
    video = open_videos("synthetic:frames=2000,size=32x48")
    budget = 24
    train, val = split_clips(
        video, size=SIZE, interval=3, val_fraction=0.2, budget=budget, draws=1200
    )
    assert not train.resident and train.frame_bound <= budget
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(300):
        batch = train.sample(4, generator=generator)
        assert 0 < train.held_frames <= train.frame_bound
        assert all(t in train.ranges[0] and 1 <= d <= 2 for t, d in zip(
            batch.t_index.tolist(), batch.distance.tolist(), strict=True
        ))  # fmt: skip
        seen.update(batch.t_index.tolist())
    # 1200 pairs sweep the training frames once: clips from all along the video
    assert min(seen) < 100 and max(seen) > train.ranges[0].stop - 100
    enumerated = []
    for batch in val.validation_batches(8):
        assert val.held_frames == 0  # streamed: only the batch handed out
        enumerated += list(zip(batch.key_index.tolist(), batch.t_index.tolist(), strict=True))
    assert enumerated == [tuple(p) for p in val.validation_pairs().tolist()]
    assert enumerated[-1] == (1996, 1998)  # to the end (key 1999 has no frame after it)


def test_a_long_video_file_streams_the_frames_full_decoding_gives(tmp_path):
    path = write_video(tmp_path / "long.mp4", 240, gop=24)
    video = open_videos(str(path))
    train, val = split_clips(video, size=SIZE, interval=4, val_fraction=0.2, budget=12)
    stack = load_frames(video, size=SIZE)
    train_ranges, val_ranges = split_sequences(stack.sequences, 0.2, gap=4)
    assert train.ranges == train_ranges and val.ranges == val_ranges
    generator = torch.Generator().manual_seed(1)
    for _ in range(60):
        batch = train.sample(3, generator=generator)
        assert train.held_frames <= train.frame_bound <= 12
        assert torch.equal(batch.key, stack.frames[batch.key_index])
        assert torch.equal(batch.frame, stack.frames[batch.t_index])
    for batch in val.validation_batches(5):  # seeks to the last 20%
        assert torch.equal(batch.key, stack.frames[batch.key_index])
        assert torch.equal(batch.frame, stack.frames[batch.t_index])
    sequence = VideoFile(path)
    assert len(sequence) == 240
    assert [f.index for f in sequence.frames_from(200)] == list(range(200, 240))


def test_same_seed_same_draws_whatever_else_draws():
    video = open_videos(["synthetic:frames=300,size=32x48", "synthetic:frames=200,seed=1"])
    train, _ = split_clips(video, size=SIZE, interval=3, val_fraction=0.2, budget=16)

    def draws(generator, others=None):
        out = []
        for _ in range(30):
            batch = train.sample(2, generator=generator)
            out.append((batch.key_index.tolist(), batch.t_index.tolist(), batch.frame.sum()))
            if others is not None:  # another stream drawing in between
                train.sample(2, generator=others)
        return out

    first = draws(torch.Generator().manual_seed(7))
    again = draws(torch.Generator().manual_seed(7), torch.Generator().manual_seed(8))
    assert first == again
    assert draws(torch.Generator().manual_seed(8)) != first
    assert train.held_frames <= train.frame_bound


def test_eval_starts_a_key_frame_at_each_sequence_and_no_tc_across(monkeypatch):
    run = prepare(SearchOptions(**(TINY_SEARCH | {"budget": "1TFLOPs"})))
    picks = {p: "full" for p in run.macs.candidates}
    spec = make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, run.options, {}
    )
    student = build_student(spec, run.teacher)
    pairs: dict[int, int] = {}  # frame pairs each TC column was given

    class CountingTC(nas.student.evaluate.TemporalConsistency):
        def update(self, *args, **kwargs):
            pairs[id(self)] = pairs.get(id(self), 0) + 1
            return super().update(*args, **kwargs)

    monkeypatch.setattr(nas.student.evaluate, "TemporalConsistency", CountingTC)
    videos = ["synthetic:frames=4,size=64x96", "synthetic:frames=4,size=64x96,seed=1"]
    result = evaluate(
        spec, run.teacher, student, videos, interval=3, max_frames=None, device=torch.device("cpu")
    )
    assert result.frames == 8
    assert result.key_frames == 4  # frames 0 and 3 of each, not 0, 3, 6 of one stream
    assert pairs and set(pairs.values()) == {6}  # 3 + 3 pairs, none across the cut


def test_infer_starts_a_key_frame_at_each_file_of_a_folder(clips_dir, tmp_path, capsys):
    run = prepare(SearchOptions(**(TINY_SEARCH | {"budget": "1TFLOPs"})))
    spec = uniform_spec(run, tmp_path / "spec.json", "full")
    masks = tmp_path / "masks"
    args = ["--video", str(clips_dir), "--max-frames", "4", "--device", "cpu", "-k", "3"]
    with pytest.raises(SystemExit) as info:
        main(["infer", "--spec", str(spec), "--out", str(masks), *args])
    assert info.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "8 frames (4 key frames)" in said  # frames 0 and 3 of each file, not 0, 3, 6
    assert len(list(masks.glob("*.png"))) == 8
