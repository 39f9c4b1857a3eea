"""Everything `nas search` takes: the search's hyperparameters (`nas.spec.SearchConfig`) and what
it runs on, validated; written to the run folder as `config.json`."""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from nas.spec import Mode, SearchConfig


class SearchOptions(SearchConfig):
    """Everything `nas search` takes: the search's hyperparameters (`nas.spec.SearchConfig`) and
    what it runs on; written to the run folder as `config.json`."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    teacher: str = "deeplabv3"
    teacher_weights: str | None = None
    num_classes: int | None = None
    budget: str = "5GFLOPs"
    max_latency: str | None = None  # a measured time limit beside a FLOPs budget, e.g. 90ms
    # --video, one or several; None: the teacher's default clips (`nas.data.default_videos`)
    video: list[str] | None = None
    max_frames: int | None = Field(default=150, ge=8)
    keyframe_interval: int = Field(default=3, ge=2)
    input_size: str | None = None  # HxW; default: the teacher's
    mode: Mode = Mode.DELTA
    input_scale: float = Field(default=1.0, gt=0, le=1)  # resolution mode: the student's scale
    search_space: str = "default"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    val_batches: int = Field(default=8, ge=1)
    calibration_batches: int = Field(default=4, ge=0)  # 0: plain SVD starts, no data
    device: str | None = None  # cpu or cuda; default: cuda when available
    threads: int | None = None
    # The layout latencies are measured in: as `nas eval` and `nas infer` run the student
    # (auto: channels-last on the CPU, `nas.core.layout.layout_for`).
    layout: str = Field(default="auto", pattern="^(auto|nchw|nhwc)$")
    out: str | None = None

    @field_validator("video", mode="before")
    @classmethod
    def _one_video(cls, value):
        """A single string (config.json files before `--video` repeated) is a list of one."""
        return [value] if isinstance(value, str) else value

    @property
    def interval(self) -> int | None:
        """The key-frame interval; None in the per-frame modes (no key frames)."""
        return self.keyframe_interval if self.mode == Mode.DELTA else None

    def search_config(self) -> SearchConfig:
        return SearchConfig.of(self)
