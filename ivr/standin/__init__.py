"""A local stand-in for Twilio: both sides of it, since Twilio cannot be reached from here.

    phone.py  the webhook side: `Phone` calls our webhooks as Twilio does and follows TwiML
    api.py    the REST side: `TwilioApi`, a real HTTP server on 127.0.0.1 with Twilio's paths,
              Basic auth and JSON (recordings to download and delete, calls, messages)

`ivr call`, `ivr flows test`, the test suite and the benchmark all call through it.
"""

from __future__ import annotations

from ivr.standin.api import (
    Created,
    Recording,
    RemoteApi,
    Seen,
    TwilioApi,
    new_sid,
    silence_wav,
    tone_wav,
    wav_seconds,
)
from ivr.standin.phone import (
    HANG_UP,
    SILENCE,
    Caller,
    CallerAudio,
    CallLog,
    FlaskTransport,
    Heard,
    HttpReply,
    HttpTransport,
    Phone,
    RecordingStore,
    ScriptedCaller,
    SpeaksAudio,
    Transport,
    TwimlError,
    synthesize,
)

__all__ = [
    "HANG_UP",
    "SILENCE",
    "CallLog",
    "Caller",
    "CallerAudio",
    "Created",
    "FlaskTransport",
    "Heard",
    "HttpReply",
    "HttpTransport",
    "Phone",
    "Recording",
    "RecordingStore",
    "RemoteApi",
    "ScriptedCaller",
    "Seen",
    "SpeaksAudio",
    "Transport",
    "TwilioApi",
    "TwimlError",
    "new_sid",
    "silence_wav",
    "synthesize",
    "tone_wav",
    "wav_seconds",
]
