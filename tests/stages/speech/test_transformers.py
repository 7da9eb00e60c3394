"""transformers backend, with a randomly initialised tiny Whisper: loading and plumbing, not accuracy.

The processor is real: the tokenizer comes from the ``tokenizer.json`` of the catalogue's tiny.en
CTranslate2 folder (the Hugging Face tokenizer of openai/whisper-tiny.en) and the feature extractor
is transformers' default Whisper one (80 mel bins, 16 kHz, 30 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment
from stages.speech import SpeechModelError, SpeechRecognizer, create_recognizer
from stages.speech.transformers_backend import split_words
from stages.speech.vad import speech_region

SAMPLE_RATE = 16_000
InWindow = Callable[[Sequence[Segment], float, float], None]
WarmUpCalls = Callable[[object, str], list[dict[str, object]]]

# Token ids of the English-only Whisper vocabulary (openai/whisper-tiny.en).
ENDOFTEXT, STARTOFTRANSCRIPT, STARTOFPREV, NOTIMESTAMPS = 50256, 50257, 50360, 50362
VOCAB_SIZE = 51864  # 50257 text tokens + 106 specials + 1501 timestamp tokens (0.00 .. 30.00 s)


def save_random_whisper(folder: Path, tokenizer_json: Path) -> Path:
    tokenizer = transformers.WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") == NOTIMESTAMPS
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(), tokenizer=tokenizer
    )
    config = transformers.WhisperConfig(
        vocab_size=VOCAB_SIZE,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=STARTOFTRANSCRIPT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        pad_token_id=ENDOFTEXT,
    )
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config)
    # What the hub's generation_config.json of a .en model holds that generate() needs for
    # timestamps (no_timestamps_token_id) and word times (alignment_heads: here both heads of the
    # only decoder layer).
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=STARTOFTRANSCRIPT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        pad_token_id=ENDOFTEXT,
        no_timestamps_token_id=NOTIMESTAMPS,
        prev_sot_token_id=STARTOFPREV,
        is_multilingual=False,
        begin_suppress_tokens=[220, ENDOFTEXT],
        max_initial_timestamp_index=50,
        alignment_heads=[[0, 0], [0, 1]],
        max_length=448,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory, tiny_en_folder: Path) -> Path:
    folder = tmp_path_factory.mktemp("transformers") / "random-whisper-tiny.en"
    return save_random_whisper(folder, tiny_en_folder / "tokenizer.json")


@pytest.fixture(scope="module")
def recognizer(model_folder: Path) -> SpeechRecognizer:
    settings = TranscribeConfig(backend="transformers", model=str(model_folder), max_new_tokens=8, threads=2)
    return create_recognizer(settings)


@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")  # DTW over a one-layer model's attention
def test_random_weights_load_and_return_segments_in_media_time(
    recognizer: SpeechRecognizer, padded_speech: np.ndarray, assert_in_window: InWindow
) -> None:
    duration = padded_speech.size / SAMPLE_RATE
    region = speech_region(padded_speech)
    assert region is not None

    segments = recognizer.transcribe(padded_speech, offset=50.0)

    # Random weights decode garbage, and place timestamps anywhere in Whisper's 30 s: the times are
    # clamped to the window (after the VAD crop) and the words carry token probabilities.
    assert segments
    assert_in_window(segments, 50.0 + region[0] / SAMPLE_RATE, duration - region[0] / SAMPLE_RATE)
    assert any(segment.words for segment in segments)


def test_vad_skips_silence_without_decoding(recognizer: SpeechRecognizer) -> None:
    assert recognizer.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32), offset=1.0) == []


def test_tokens_are_grouped_into_words(tiny_en_folder: Path) -> None:
    tokenizer = transformers.WhisperTokenizer(tokenizer_file=str(tiny_en_folder / "tokenizer.json"))
    text = tokenizer.encode(" Help! Call the police! 警察", add_special_tokens=False)
    first_timestamp = NOTIMESTAMPS + 1
    tokens = [first_timestamp, *text, first_timestamp + 50, ENDOFTEXT]

    words = split_words(tokenizer, tokens, ENDOFTEXT)

    assert [word for word, _ in words] == ["Help!", "Call", "the", "police!", "警察"]
    assert [i for _, indices in words for i in indices] == list(range(1, len(text) + 1))


def test_missing_model_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing-whisper"

    with pytest.raises(SpeechModelError, match="missing-whisper"):
        create_recognizer(TranscribeConfig(backend="transformers", model=str(missing)))


def test_ctranslate2_folder_is_not_a_transformers_model(tiny_en_folder: Path) -> None:
    with pytest.raises(SpeechModelError, match="could not be loaded"):
        create_recognizer(TranscribeConfig(backend="transformers", model=str(tiny_en_folder)))


def test_warm_up_runs_the_model_on_a_second_of_silence_past_the_voice_activity_check(
    recognizer: SpeechRecognizer, warm_up_calls: WarmUpCalls
) -> None:
    warm_up_calls(recognizer, "generate")
