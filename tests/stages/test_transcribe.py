from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import TranscribeConfig
from pipeline.messages import AudioChunk
from stages.transcribe import SPEECH_TAIL_S, AudioWindow, choose_cut, dbfs

SETTINGS = TranscribeConfig(min_window_s=2.0, max_window_s=10.0)


def chunk(pts: float, seconds: float = 0.5, amplitude: float = 0.01) -> AudioChunk:
    samples = np.full(int(seconds * 16000), amplitude, np.float32)
    return AudioChunk(camera="c", seq=0, pts=pts, wall_time=0.0, sample_rate=16000, samples=samples)


def test_dbfs_of_full_scale_and_silence():
    assert dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert dbfs(np.full(100, 0.1, np.float32)) == pytest.approx(-20.0)
    assert dbfs(np.zeros(100, np.float32)) == -120.0


def test_window_cut_keeps_media_time_continuous_and_splits_levels():
    window = AudioWindow()
    for i in range(6):
        window.add(chunk(10.0 + i * 0.5))
    assert window.duration == pytest.approx(3.0)
    start, audio, levels = window.cut(1.25)
    assert start == 10.0 and len(audio) == 20000
    assert [lvl.pts for lvl in levels] == [10.0, 10.5, 11.0]
    assert window.start == pytest.approx(11.25) and window.duration == pytest.approx(1.75)
    assert [lvl.pts for lvl in window.levels] == [11.5, 12.0, 12.5]


def test_silence_is_released_except_a_short_tail():
    assert choose_cut([], 4.0, SETTINGS, final=False) == (3.5, False)


def test_open_utterance_waits_for_more_audio():
    assert choose_cut([(1.0, 3.9)], 4.0, SETTINGS, final=False) == (0.0, False)


def test_closed_utterance_is_transcribed_up_to_just_after_it():
    assert choose_cut([(1.0, 2.5)], 4.0, SETTINGS, final=False) == (pytest.approx(2.5 + SPEECH_TAIL_S / 2), True)


def test_never_longer_than_max_window_even_mid_speech():
    assert choose_cut([(0.5, 10.0)], 10.0, SETTINGS, final=False) == (10.0, True)


def test_end_of_stream_flushes_everything():
    assert choose_cut([(1.0, 3.9)], 4.0, SETTINGS, final=True) == (4.0, True)
    assert choose_cut([], 4.0, SETTINGS, final=True) == (4.0, False)


def transcriber_into_fuse(tmp_path, config):
    """A Transcriber (real Whisper tiny.en) whose transcripts land on a Receiver standing for fuse,
    over real ZeroMQ: (transcriber, receiver, context)."""
    import zmq

    from pipeline.stage import StageContext, StageSpec
    from pipeline.transport import Endpoints, Receiver, Sender
    from stages.speech import create_recognizer
    from stages.transcribe import Transcriber

    endpoints = Endpoints.in_folder(tmp_path)
    spec = StageSpec("transcribe", "transcribe", "stages.transcribe:run", "cpu", 1, None, endpoints)
    context = zmq.Context()
    receiver = Receiver(context, endpoints.fuse, queue=100)
    ctx = StageContext(spec=spec, config=config, zmq_context=context)
    transcriber = Transcriber(ctx, create_recognizer(config.stages.transcribe), Sender(context, endpoints.fuse))
    return transcriber, receiver, context


def test_a_gap_in_the_audio_keeps_media_time_true(tmp_path) -> None:
    """A camera that reconnects (or whose chunks were dropped) sends audio with a jump in media
    time: what came before the gap is finished on its own, and what comes after starts at its
    own time (real Whisper tiny.en, real ZeroMQ)."""
    from pipeline.messages import Transcript
    from tests.conftest import make_config

    config = make_config(tmp_path, stages={"transcribe": {"vad": False, "min_window_s": 2.0, "max_window_s": 4.0}})
    transcriber, receiver, context = transcriber_into_fuse(tmp_path, config)
    for i in range(3):  # 1.5 s of audio from 10 s
        transcriber.on_chunk(chunk(10.0 + i * 0.5))
    for i in range(8):  # then 4 s of audio from 40 s: the camera was away for 28.5 s
        transcriber.on_chunk(chunk(40.0 + i * 0.5))
    transcripts = [receiver.recv(timeout_ms=2000) for _ in range(2)]
    receiver.close()
    context.destroy(linger=0)
    assert all(isinstance(t, Transcript) for t in transcripts)
    spans = [(t.start, t.end) for t in transcripts if isinstance(t, Transcript)]
    assert spans[0] == pytest.approx((10.0, 11.5))
    assert spans[1][0] == pytest.approx(40.0)


def test_keyword_clock_measures_from_the_end_of_the_utterance_to_the_first_arrival():
    from pipeline.messages import Segment, Word
    from stages.transcribe import KeywordClock

    clock = KeywordClock(("help",))
    partial = Segment("help", 1.0, 1.4, (Word("help", 1.0, 1.3),))
    clock.sent([partial], now=1000.0)  # a partial transcript brought it at wall time 1000
    final = Segment("help, call the police", 1.05, 3.0, (Word("help", 1.05, 1.3), Word("police", 2.5, 3.0)))
    clock.sent([final], now=1004.0)
    walls = [(0.0, 998.0)]  # media time 0 was captured at wall time 998: the utterance ended at 1001
    assert clock.lags([final], walls) == [0.0]  # it arrived before the sentence was over
    late = KeywordClock(("police",))
    late.sent([final], now=1003.5)
    assert late.lags([final], walls) == [pytest.approx(2.5)]


def test_partial_transcripts_come_while_speech_goes_on_and_never_in_fast_replay(tmp_path) -> None:
    """Real Whisper tiny.en and Silero VAD on espeak-ng speech that is still going on."""
    import shutil
    import subprocess

    from pipeline.messages import Transcript
    from tests.conftest import make_config
    from tests.stages.speech.conftest import read_mono_16k

    wav = tmp_path / "long.wav"
    sentence = "help me please, somebody help me, the building is on fire, call the fire brigade right now"
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is not installed: `make test` installs it"
    subprocess.run([espeak, "-v", "en-us", "-w", str(wav), sentence], check=True, capture_output=True)
    speech = read_mono_16k(wav)
    results = {}
    for mode in ("realtime", "fast"):
        config = make_config(tmp_path, runtime={"mode": mode, "ipc_dir": str(tmp_path)})
        transcriber, receiver, context = transcriber_into_fuse(tmp_path, config)
        half = 8000
        for i in range(0, min(len(speech), 16000 * 4), half):  # the first 4 s: the speaker is not done
            samples = speech[i : i + half]
            transcriber.on_chunk(
                AudioChunk(camera="plaza", seq=i, pts=i / 16000, wall_time=0.0, sample_rate=16000, samples=samples)
            )
        got = []
        while (message := receiver.recv(timeout_ms=300)) is not None:
            got.append(message)
        receiver.close()
        context.destroy(linger=0)
        results[mode] = [m for m in got if isinstance(m, Transcript) and m.partial]
    assert results["realtime"], "no partial transcript while the speaker went on"
    words = " ".join(s.text.lower() for t in results["realtime"] for s in t.segments)
    assert "help" in words
    assert all(t.end == t.start for t in results["realtime"])
    assert results["fast"] == []


def espeak_16k(tmp_path, text: str) -> np.ndarray:
    import shutil
    import subprocess

    from tests.stages.speech.conftest import read_mono_16k

    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is not installed: `make test` installs it"
    wav = tmp_path / "said.wav"
    subprocess.run([espeak, "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
    return read_mono_16k(wav)


def test_a_pause_is_found_where_the_speech_stopped(tmp_path) -> None:
    from stages.transcribe import pause_in

    speech = espeak_16k(tmp_path, "help me please")
    silence = np.zeros(8000, np.float32)  # 0.5 s
    stopped = pause_in(np.concatenate([speech, silence]))
    assert stopped is not None and abs(stopped - len(speech) / 16000) < 0.35
    assert pause_in(speech[: len(speech) * 2 // 3]) is None, "still speaking at the end"
    assert pause_in(np.zeros(32000, np.float32)) is None, "no one spoke"


def test_a_pause_brings_the_last_words_at_once_and_the_final_transcript_reuses_them(tmp_path) -> None:
    """Real Whisper tiny.en and Silero VAD: the speaker says a sentence ending in a keyword, then
    nothing. A partial transcript with the keyword comes within a second of the end of the speech,
    long before the utterance counts as closed (2 s of silence), and the final transcript says the
    same without running Whisper again."""
    from pipeline.messages import Transcript
    from tests.conftest import make_config

    speech = espeak_16k(tmp_path, "somebody call the police")
    audio = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000 * 3, np.float32)])
    config = make_config(tmp_path, runtime={"mode": "realtime", "ipc_dir": str(tmp_path)})
    transcriber, receiver, context = transcriber_into_fuse(tmp_path, config)
    speech_end_s = (8000 + len(speech)) / 16000
    arrivals: list[tuple[float, Transcript]] = []  # (media time of the audio fed so far, transcript)
    half = 8000
    for i in range(0, len(audio), half):
        transcriber.on_chunk(
            AudioChunk(
                camera="plaza", seq=i, pts=i / 16000, wall_time=0.0, sample_rate=16000, samples=audio[i : i + half]
            )
        )
        while (message := receiver.recv(timeout_ms=50)) is not None:
            assert isinstance(message, Transcript)
            arrivals.append(((i + half) / 16000, message))
    receiver.close()
    context.destroy(linger=0)

    def said(transcript: Transcript) -> str:
        return " ".join(s.text.lower() for s in transcript.segments)

    with_police = [(fed, t) for fed, t in arrivals if t.partial and "police" in said(t)]
    assert with_police, [(fed, t.partial, said(t)) for fed, t in arrivals]
    assert with_police[0][0] <= speech_end_s + 1.0, "the keyword came within a second of the end of the speech"
    finals = [t for _, t in arrivals if not t.partial and t.segments]
    assert len(finals) == 1 and said(finals[0]) == said(with_police[-1][1])
    assert transcriber.ctx.counters["partials_reused"] == 1
    assert transcriber.ctx.counters["windows_transcribed"] == 0


def test_the_end_of_a_stream_right_after_a_pause_reuses_the_pause_transcript(tmp_path) -> None:
    """The camera's stream ends 0.75 s after the speaker stopped: the last words came with the pause,
    and the final transcript at the end of stream says the same without running Whisper again."""
    from pipeline.messages import EndOfStream, Transcript
    from tests.conftest import make_config

    speech = espeak_16k(tmp_path, "help me please")
    audio = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(12000, np.float32)])
    config = make_config(tmp_path, runtime={"mode": "realtime", "ipc_dir": str(tmp_path)})
    transcriber, receiver, context = transcriber_into_fuse(tmp_path, config)
    for i in range(0, len(audio), 8000):
        samples = audio[i : i + 8000]
        transcriber.on_chunk(
            AudioChunk(camera="plaza", seq=i, pts=i / 16000, wall_time=0.0, sample_rate=16000, samples=samples)
        )
    transcriber.on_end(EndOfStream("plaza", "audio"))
    got = []
    while (message := receiver.recv(timeout_ms=300)) is not None:
        got.append(message)
    receiver.close()
    context.destroy(linger=0)
    partials = [m for m in got if isinstance(m, Transcript) and m.partial and m.segments]
    finals = [m for m in got if isinstance(m, Transcript) and not m.partial and m.segments]
    assert partials and len(finals) == 1
    assert finals[0].segments == partials[-1].segments and "help" in finals[0].segments[0].text.lower()
    assert transcriber.ctx.counters["partials_reused"] == 1 and transcriber.ctx.counters["windows_transcribed"] == 0
    assert isinstance(got[-1], EndOfStream), "the end of stream follows the final transcript"
