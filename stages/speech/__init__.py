"""Speech recognition backends for the transcribe stage (faster-whisper, openai-whisper, transformers).

Import the backends through ``create_recognizer``: each one is loaded only when configured.
"""

from stages.speech.base import (
    SpeechError,
    SpeechModelError,
    SpeechRecognizer,
    create_recognizer,
)

__all__ = ["SpeechError", "SpeechModelError", "SpeechRecognizer", "create_recognizer"]
