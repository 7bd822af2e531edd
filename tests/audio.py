"""Real test audio: speech from espeak-ng (English) and festival (Russian) at telephone quality
(sox), and WAV files built by hand.

espeak-ng and sox come from Debian. `ensure_tools()` installs them with apt-get when they are
missing (CI runs as root with no stdin) and fails with a clear message when it cannot: a test
that needs speech never silently skips.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ivr.standin import synthesize

TOOLS = ("espeak-ng", "sox")
PHONE_RATE = 8000


def _missing() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=900, check=False)


def ensure_tools() -> None:
    """Install espeak-ng and sox with apt-get if they are not on PATH; raise if that fails."""
    missing = _missing()
    if not missing:
        return
    how = "apt-get install -y espeak-ng sox"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"{' and '.join(missing)} not found and cannot be installed here: run `{how}` "
                           "as root (Debian), then run the tests again")
    result = _apt("install", "-y", "-q", *TOOLS)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        _apt("update", "-q")
        result = _apt("install", "-y", "-q", *TOOLS)
    if result.returncode != 0 or _missing():
        raise RuntimeError(f"`{how}` failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")


RUSSIAN_VOICE = ("festival", "festvox-ru")  # Debian: a Russian voice Whisper understands


def ensure_russian_voice() -> None:
    """Install festival and festvox-ru with apt-get when missing; raise if that fails."""
    from ivr.standin.phone import FESTIVAL_RU

    ensure_tools()
    if shutil.which("text2wave") is not None and FESTIVAL_RU.is_dir():
        return
    how = "apt-get install -y festival festvox-ru"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"festival with festvox-ru not found and cannot be installed here: run `{how}` "
                           "as root (Debian), then run the tests again")
    result = _apt("install", "-y", "-q", *RUSSIAN_VOICE)
    if result.returncode != 0:
        _apt("update", "-q")
        result = _apt("install", "-y", "-q", *RUSSIAN_VOICE)
    if result.returncode != 0 or shutil.which("text2wave") is None or not FESTIVAL_RU.is_dir():
        raise RuntimeError(f"`{how}` failed (exit {result.returncode}): {result.stderr.strip()[-400:]}")


def speak_russian(text: str) -> bytes:
    """Russian `text` spoken by festival (festvox-ru) at 8 kHz: espeak-ng's Russian is
    unintelligible to Whisper, this voice is not."""
    from ivr.standin.phone import festival_russian

    ensure_russian_voice()
    spoken = festival_russian(text)
    assert spoken is not None
    return spoken


def speak(text: str, voice: str = "en-us", rate: int = PHONE_RATE, speed: int = 150) -> bytes:
    """`text` spoken by espeak-ng, as a mono 16-bit WAV at `rate` (8 kHz: what Twilio records),
    the same bytes every run (see `ivr.standin.synthesize`)."""
    ensure_tools()
    return synthesize(text, voice, rate, speed)


def wav(samples: npt.NDArray[np.int16], rate: int = PHONE_RATE, channels: int = 1) -> bytes:
    """A WAV file of interleaved 16-bit samples, written by the stdlib `wave` module."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.astype("<i2").tobytes())
        return path.read_bytes()


def tone(hz: float, seconds: float, rate: int = PHONE_RATE, level: float = 0.5) -> npt.NDArray[np.float64]:
    """A sine wave in [-level, level]."""
    return level * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)


def pcm16(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def wav_header(rate: int, channels: int, bits: int, data_bytes: int, format_tag: int = 1) -> bytes:
    """The 44-byte header of a canonical WAV file, saying whatever it is told to."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))
