"""The standalone limits ``run.py bench`` compares the pipeline with: decode only, detect only,
transcribe only, transport only, and the per-camera ultralytics predict loop a user would write."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from pipeline.config import CameraConfig, VigilConfig


# ----- standalone limits ------------------------------------------------------------------------
def decode_frames(camera: CameraConfig, audio: bool = False) -> tuple[list[np.ndarray], np.ndarray, float]:
    """The clip's analysis frames (and its 16 kHz audio) as the decode stage makes them; also the
    seconds it took to make the frames."""
    from stages.media import open_media
    from stages.sampling import AudioSample, VideoSample, sample_media

    began = time.perf_counter()
    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    with open_media(camera.source, timeout_s=10) as media:
        video = media.container.streams.video[0]
        video.thread_type = "AUTO"
        track = media.container.streams.audio[0] if audio and media.container.streams.audio else None
        for sample in sample_media(media, video, track, camera.analysis, 0.5):
            if isinstance(sample, VideoSample):
                frames.append(sample.image)
            elif isinstance(sample, AudioSample):
                chunks.append(sample.samples)
    seconds = time.perf_counter() - began
    return frames, (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), seconds


def detect_limits(config: VigilConfig, frames: list[np.ndarray], latency: bool = True) -> dict[str, Any]:
    """Throughput at the configured batch, as detect runs in ``fast`` replay (with batch
    parallelism: a copy of the model per lane, batches handed out as the stage does), and the
    median batch-1 latency of one detector as live cameras use it (each run over every thread)."""
    import cv2

    from stages.detectors.base import create_detector
    from stages.detectors.lanes import DetectorLanes, model_copies

    settings = config.stages.detect
    lanes = settings.lanes("fast")
    if lanes == 1:
        cv2.setNumThreads(settings.threads)
        detector = create_detector(settings)
        detector.detect(frames[: settings.batch])  # warm-up
        began = time.perf_counter()
        for i in range(0, len(frames), settings.batch):
            detector.detect(frames[i : i + settings.batch])
        fps = len(frames) / (time.perf_counter() - began)
    else:
        copies = model_copies(settings, lanes)
        for copy in copies:
            copy.detect(frames[: settings.batch])  # warm-up
        parallel = DetectorLanes(copies)
        began = time.perf_counter()
        for i in range(0, len(frames), settings.batch):
            while not parallel.submit(frames[i : i + settings.batch], lambda result: None):
                pass
        parallel.drain()
        fps = len(frames) / (time.perf_counter() - began)
        parallel.close()
    figures: dict[str, Any] = {"fps": round(fps, 1), "lanes": lanes}
    if latency:
        live = settings.model_copy(update={"parallelism": "intra-op"})
        cv2.setNumThreads(live.threads)
        detector = create_detector(live) if lanes > 1 else detector
        single = []
        for image in frames[:: max(1, len(frames) // 20)][:20]:
            started = time.perf_counter()
            detector.detect([image])
            single.append(time.perf_counter() - started)
        figures["batch1_latency_ms"] = round(1000 * statistics.median(single), 1)
    return figures


def transcribe_limit(config: VigilConfig, audio: np.ndarray) -> dict[str, float]:
    """Seconds of audio per second of compute: Silero VAD over the clip, Whisper on the speech."""
    from stages.speech import create_recognizer
    from stages.speech.vad import speech_spans

    recognizer = create_recognizer(config.stages.transcribe)
    began = time.perf_counter()
    spans = speech_spans(audio)
    for start, end in spans:
        recognizer.transcribe(audio[int(start * 16000) : int(end * 16000)], offset=start)
    spent = time.perf_counter() - began
    return {
        "audio_s": round(len(audio) / 16000, 1),
        "compute_s": round(spent, 2),
        "x_realtime": round(len(audio) / 16000 / spent, 1),
    }


def transport_cost(image: np.ndarray, count: int = 300) -> dict[str, float]:
    """CPU seconds per frame message over ZeroMQ ipc (sender and receiver together), as the stages
    send them: the frame's pixels travel without a copy on the sending side."""
    import threading

    import zmq

    from pipeline.messages import Frame
    from pipeline.transport import Receiver, Sender

    with tempfile.TemporaryDirectory(prefix="vigil-transport-") as tmp:
        context = zmq.Context()
        endpoint = f"ipc://{tmp}/bench.sock"
        receiver = Receiver(context, endpoint, queue=64)
        sender = Sender(context, endpoint, queue=64)
        got = 0

        def drain() -> None:
            nonlocal got
            while got < count and receiver.recv(timeout_ms=2000) is not None:
                got += 1

        thread = threading.Thread(target=drain)
        cpu, wall = time.process_time(), time.perf_counter()
        thread.start()
        for seq in range(count):
            sender.send(Frame(camera="c", seq=seq, pts=seq / 5, wall_time=time.time(), image=image))
        thread.join(30)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sender.close()
        receiver.close()
        context.destroy(linger=0)
    return {
        "frame_bytes": int(image.nbytes),
        "messages_per_s": round(got / wall, 1),
        "cpu_ms_per_message": round(1000 * cpu / max(1, got), 3),
    }


# ----- the baseline a user would write -------------------------------------------------------------
def _predict_loop(clip: str, model: str, imgsz: int, stride: int, threads: int, out: Any) -> None:
    """One camera as a user would write it: ultralytics' own streaming predict over the file."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    detector = YOLO(model)
    began, frames = None, 0
    for _ in detector.predict(source=clip, stream=True, imgsz=imgsz, vid_stride=stride, verbose=False):
        torch.set_num_threads(threads)  # ultralytics resets it to 1 on its first predict
        if began is None:
            began = time.time()  # the wall clock, shared by the loops' processes
        frames += 1
    ended = time.time()
    out.put((frames, began if began is not None else ended, ended))


def baseline(clip: str, cameras: int, model: str, imgsz: int, stride: int) -> dict[str, float]:
    """``cameras`` predict loops side by side, the cores shared between them."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // cameras)
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    workers = [
        mp.Process(target=_predict_loop, args=(clip, model, imgsz, stride, threads, out)) for _ in range(cameras)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join(30)
    frames = sum(r[0] for r in results)
    # From the first frame of any loop to the last frame of any: the loops load their models at
    # different speeds, and one that starts early has the cores to itself for a while (timing each
    # loop on its own clock counted that head start, as if the loops had run side by side).
    # The earliest loop's first frame was done before the span began.
    span = max(r[2] for r in results) - min(r[1] for r in results)
    rate = (frames - 1) / max(span, 1e-6)
    return {"cameras": cameras, "threads_each": threads, "frames": frames, "fps": round(rate, 2)}
