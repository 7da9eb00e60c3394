"""Per-stage settings (``stages.*`` in the config): device, threads and the rest of each stage, and
the thread budgets chosen from the machine's cores when the config leaves them out."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.strict import StrictModel

DEVICE_PATTERN = re.compile(r"^(cpu|cuda:\d+)$")
# detect's parallelism 'auto' loads at most this many copies of the model (each takes its own memory)
AUTO_MAX_COPIES = 4


class StageConfig(StrictModel):
    device: str = Field("cpu", description="Device the stage runs on: 'cpu' or 'cuda:N'.")
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="Threads for the stage's compute library (torch, ORT, OpenCV; FFmpeg's decoder and "
        "scaler in decode). Left out: chosen from the machine's cores (detect all of them, transcribe half, "
        "the others 1).",
    )
    cpus: list[int] | None = Field(None, description="CPU cores the stage process is pinned to (affinity).")
    nice: int | None = Field(
        None,
        ge=0,
        le=19,
        description="Scheduling niceness: higher yields the CPU to the other stages. Left out: 0.",
    )
    scheduler: Literal["normal", "idle"] | None = Field(
        None,
        description="Linux CPU scheduling class: 'idle' (SCHED_IDLE) runs the stage only on CPU time no "
        "normal process wants. Left out: 'normal', except in `fast` replay with `nice` left out too, where "
        "the stages beside the detector are 'idle': they fill the detector's gaps instead of taking its cores.",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda:N' (for example 'cuda:0')")
        return device


class DecodeConfig(StageConfig):
    audio_chunk_s: float = Field(0.5, gt=0, le=10, description="Length of each 16 kHz mono audio chunk sent on.")
    open_timeout_s: float = Field(10.0, gt=0, description="Seconds allowed to open a source before giving up.")
    probe_s: float = Field(
        0.5, gt=0, le=30, description="Seconds of a live stream read to identify its tracks before frames flow."
    )
    stall_s: float = Field(
        10.0,
        ge=1,
        le=600,
        description="A live camera that sends nothing for this many seconds is stalled and reopened.",
    )
    reconnect_first_s: float = Field(
        0.5, gt=0, le=60, description="Cap of the first reconnect delay; each failure doubles the cap (full jitter)."
    )
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Largest delay between reconnect attempts.")
    credentials_retry_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="A camera that streamed in this run and then refuses its credentials (401/403: rebooting, or "
        "its password changed) is tried again after this long, so that the camera's lockout after a few failed "
        "logins is not reached. At the first connection a refusal fails the camera at once.",
    )
    healthy_after_s: float = Field(
        30.0, gt=0, description="Seconds of streaming after which a connection counts as healthy and backoff resets."
    )
    queue: int = Field(4, ge=1, le=1000, description="Frames that may wait between decode and detect.")
    end_hold_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="On a host without the alert stage: seconds a decoder keeps its connections open after "
        "the end of a file, so that a busy detect or transcribe elsewhere still reads its last frames, audio "
        "and end of stream (a connection that closes loses what its receiver has not read yet). Where the "
        "alert stage runs, decoders keep them open until the run ends.",
    )


class ReplicatedStageConfig(StageConfig):
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes running this stage side by side; each camera is served by one of them "
        "(cameras are dealt out in config order). `threads` is per replica.",
    )


GPU_LIVE_BATCH = 16  # live_batch's default on a CUDA device


class DetectConfig(ReplicatedStageConfig):
    backend: Literal["opencv", "ultralytics"] = Field("opencv", description="Detector implementation.")
    model: str = Field(
        "yolov3-tiny-coco",
        description="Catalogue name, local path (relative: from the config file's folder when the file is there), "
        "or a name the backend loads itself (e.g. 'yolo11n.pt').",
    )
    input_size: int = Field(416, ge=32, le=2048, description="Network input size in pixels (multiple of 32).")
    batch: int = Field(
        4, ge=1, le=256, description="Most frames (across cameras) run through the model at once in fast replay."
    )
    live_batch: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Most frames per model run with live cameras (of those already waiting: a run never waits to "
        "fill). null: 16 for the ultralytics backend on a CUDA device, where a batch costs little more than one "
        "frame (one H200 analysed 610 frames/s at 16, where one frame a run would cap it near 170), else 1: on a "
        "CPU (OpenCV's pip wheels compute there whatever the device) each frame adds its own time to the run "
        "and so to every frame's latency.",
    )
    skip_stale: bool = Field(
        True,
        description="With live cameras, a frame older than one detection (it waited through a detection of "
        "another camera's frame, or through transcribe's turn on the CPU) is skipped rather than analysed "
        "late: latency stays near two detections when the detector is saturated; false: such frames are "
        "analysed too (a few more frames, older ones).",
    )
    parallelism: Literal["auto", "intra-op", "batches"] = Field(
        "auto",
        description="How detect uses its `threads` on a CPU: 'intra-op' splits each model run over them (the "
        "lowest latency per frame); 'batches' loads `threads` copies of the model, each running its own batch "
        "on one thread, in order (more frames/s: no thread waits for the slowest of the others, but each batch "
        "takes longer and each copy takes its own memory: about 370 MiB for YOLOv3-tiny at batch 4); 'auto': "
        "batches in `fast` replay with at most 4 threads, intra-op otherwise.",
    )
    confidence: float = Field(0.3, ge=0, le=1, description="Detections below this confidence are dropped.")
    nms: float = Field(0.45, ge=0, le=1, description="IoU threshold of non-maximum suppression.")
    classes: list[str] | None = Field(None, description="Only these classes are kept (all when unset).")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        if size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {size}")
        return size

    @model_validator(mode="after")
    def _batches_on_cpu(self) -> DetectConfig:
        if self.parallelism == "batches" and self.device != "cpu":
            raise ValueError(
                f"parallelism 'batches' runs model copies on CPU threads; on {self.device} use 'auto' or "
                "'intra-op' and a larger batch"
            )
        return self

    def live_batch_size(self, device: str | None = None) -> int:
        """``live_batch``, or its default for ``device`` (this stage's own by default)."""
        if self.live_batch is not None:
            return self.live_batch
        on_gpu = self.backend == "ultralytics" and (device or self.device).startswith("cuda")
        return GPU_LIVE_BATCH if on_gpu else 1

    def lanes(self, mode: str) -> int:
        """Copies of the model running batches side by side in ``mode`` (``runtime.mode``): ``threads``
        with batch parallelism on a CPU, else 1 (one copy, each run split over ``threads``)."""
        auto = self.parallelism == "auto" and mode == "fast" and self.threads <= AUTO_MAX_COPIES
        return self.threads if (self.parallelism == "batches" or auto) and self.device == "cpu" else 1


class TranscribeConfig(ReplicatedStageConfig):
    backend: Literal["faster-whisper", "openai-whisper", "transformers"] = Field(
        "faster-whisper", description="Speech recognition implementation."
    )
    model: str = Field(
        "whisper-tiny.en",
        description="Catalogue name, local path (relative: from the config file's folder when the file is there), "
        "or a name the backend loads itself (e.g. 'small.en').",
    )
    language: str | None = Field("en", description="Spoken language code, or null to detect it.")
    vad: bool = Field(True, description="Run voice activity detection and transcribe only speech.")
    min_window_s: float = Field(2.0, gt=0, description="Audio buffered before voice activity is checked.")
    max_window_s: float = Field(15.0, gt=0, description="Longest audio span transcribed at once.")
    compute_type: str = Field("int8", description="faster-whisper compute type (int8, float16, float32).")
    max_new_tokens: int = Field(128, ge=1, le=448, description="Most tokens decoded per audio window.")
    fit_context: bool = Field(
        True,
        description="faster-whisper: run Whisper's encoder on each window's own length (at least 10 s) "
        "instead of padding every window to 30 s: several times less CPU per window; false: exact Whisper.",
    )
    partial_s: float | None = Field(
        1.5,
        gt=0,
        description="While someone is still speaking, transcribe what was said so far after every this many "
        "seconds of new audio, so a keyword reaches fuse before the sentence ends (skipped while audio waits "
        "to be processed, and in fast replay); null: whole utterances only.",
    )

    @model_validator(mode="after")
    def _windows_ordered(self) -> TranscribeConfig:
        if self.max_window_s < self.min_window_s:
            raise ValueError("max_window_s must be at least min_window_s")
        return self


class SignalWeights(StrictModel):
    zone: float = Field(0.7, ge=0, le=1, description="Weight of zone intrusion.")
    count: float = Field(0.5, ge=0, le=1, description="Weight of the object-count (crowd) signal.")
    keyword: float = Field(0.9, ge=0, le=1, description="Weight of a spoken keyword.")
    loudness: float = Field(0.4, ge=0, le=1, description="Weight of a loudness spike.")
    line: float = Field(0.7, ge=0, le=1, description="Weight of a tripwire crossing.")


class FuseConfig(StageConfig):
    weights: SignalWeights = Field(default_factory=SignalWeights, description="Noisy-OR weight per signal.")
    open_threshold: float = Field(0.6, gt=0, le=1, description="Score at or above which an incident opens.")
    close_threshold: float = Field(0.4, ge=0, le=1, description="Score below which an incident may close.")
    min_duration_s: float = Field(0.5, ge=0, description="Seconds the score must stay high before opening.")
    close_after_s: float = Field(3.0, ge=0, description="Seconds the score must stay low before closing.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds after a close before the camera may open again.")
    escalate_by: float = Field(
        0.15, gt=0, le=1, description="An open incident sends alert.updated when its score rises this much."
    )
    keyword_hold_s: float = Field(3.0, gt=0, description="Seconds a spoken keyword keeps its signal raised.")
    crossing_hold_s: float = Field(2.0, gt=0, description="Seconds a line crossing keeps its signal raised.")
    max_audio_lag_s: float = Field(
        5.0,
        gt=0,
        description="In live/realtime mode, how long video waits for audio results before going on.",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> FuseConfig:
        if self.close_threshold > self.open_threshold:
            raise ValueError("close_threshold must not exceed open_threshold")
        return self


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# In ``fast`` replay the detector is the slowest stage and sets the pace. The stages beside it run in
# the idle scheduling class there: a decoder or a Whisper run that wakes up never takes a core from
# one of the detector's threads (OpenCV waits for the slowest of them), it runs while the detector
# waits. On the 2-core development machine (AMD EPYC) the pipeline's rate against the detector's own
# went from 0.79-0.81 (niceness 5 and 10) to 0.83-0.85 (three alternated runs of three pairs each).
# Live and realtime keep 'normal': there a frame's and a keyword's latency count, not a backlog's rate.
FAST_REPLAY_IDLE = frozenset({"decode", "transcribe", "fuse", "alert"})


# In ``fast`` replay fuse holds every analysed frame (with its image) until the camera's audio has
# been analysed past it, so decode may run only this many 0.5 s audio chunks ahead of transcribe on
# each side of the link (plus what the socket buffers): a recognizer slower than the detector then
# holds decode back, and fuse never holds more than several seconds of frames. With a recognizer at
# real time against a 3x detector, fuse held 102 of the demo's 150 frames with 64 + 256 chunks.
FAST_REPLAY_AUDIO_QUEUE = 4


def stage_nice(settings: StageConfig) -> int:
    """The niceness a stage process runs at (its ``nice`` setting; 0 when left out)."""
    return settings.nice if settings.nice is not None else 0


def stage_scheduler(stage: str, settings: StageConfig, mode: str) -> str:
    """The scheduling class a ``stage`` process runs in: its ``scheduler`` setting, 'normal' when it
    chose a ``nice``, else the default for ``mode`` (``FAST_REPLAY_IDLE``)."""
    if settings.scheduler is not None:
        return settings.scheduler
    if settings.nice is not None:
        return "normal"
    return "idle" if mode == "fast" and stage in FAST_REPLAY_IDLE else "normal"


def default_threads(cores: int) -> dict[str, int]:
    """Thread budgets when the config gives none: the detector, the usual bottleneck, gets every
    core; speech half of them (it works in bursts); the
    decoders, fuse and the alert sink one each. Replicas share their stage's budget."""
    return {"decode": 1, "detect": cores, "transcribe": max(1, cores // 2), "fuse": 1, "alert": 1}


class StagesConfig(StrictModel):
    @model_validator(mode="before")
    @classmethod
    def _thread_budgets(cls, data: Any) -> Any:
        """Fill in each stage's ``threads`` from the machine's cores where the config leaves it out."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        for stage, threads in default_threads(usable_cores()).items():
            settings = filled.get(stage)
            if settings is None:
                filled[stage] = {"threads": threads}
            elif isinstance(settings, dict) and "threads" not in settings:
                replicas = settings.get("replicas", 1)
                share = max(1, threads // replicas) if isinstance(replicas, int) and replicas > 0 else threads
                filled[stage] = {**settings, "threads": share}
        return filled

    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoder settings (one per camera).")
    detect: DetectConfig = Field(default_factory=DetectConfig, description="Object detector settings.")
    transcribe: TranscribeConfig = Field(default_factory=TranscribeConfig, description="Speech settings.")
    fuse: FuseConfig = Field(default_factory=FuseConfig, description="Fusion and incident settings.")
    alert: StageConfig = Field(default_factory=StageConfig, description="Alert sink process settings.")
