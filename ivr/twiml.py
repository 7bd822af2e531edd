"""The Twilio adapter: engine turns -> TwiML, call state <-> action URLs, signatures.

TwiML is built with twilio's `VoiceResponse`, never by hand. What a turn says depends only
on the flow version, the step and the language, so the rendered document is cached with a
placeholder where the call's state token goes; a webhook then costs a dict lookup and one
string replace instead of building XML (see ../shared/notes/performance.md).

Call state travels in the action URLs Twilio calls back (`?s=<token>`). Twilio signs the
whole URL, and every /twilio request is checked against that signature, so the token needs
no signature of its own; it holds no phone number, only flow, version, step, language,
attempts and the flow's own variables. Tokens are base64url, so query values stay within
[A-Za-z0-9_-] (werkzeug would re-encode anything else and break signatures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from twilio.request_validator import HMAC_SHA1, RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.engine import (
    AskKeys,
    AskRecording,
    CallState,
    Connect,
    End,
    Silence,
    Turn,
    Utterance,
)
from ivr.errors import StateError

PLACEHOLDER = "__STATE__"
MAX_TOKEN = 2048


# --- call state tokens ---------------------------------------------------------------------


def encode_state(state: CallState) -> str:
    fields: list[object] = [state.flow, state.version, state.step, state.language, state.attempts,
                            [list(kv) for kv in state.variables]]
    if state.path:  # a token from before paths had six fields: both read alike
        fields.append(list(state.path))
    raw = json.dumps(
        fields,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_state(token: str) -> CallState:
    if not token or len(token) > MAX_TOKEN:
        raise StateError("missing or oversized call state")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        flow, version, step, language, attempts, variables, *rest = json.loads(raw)
        if len(rest) > 1:
            raise ValueError("too many fields")
        state = CallState(
            str(flow), str(version), str(step), str(language), int(attempts),
            tuple((str(k), str(v)) for k, v in variables),
            tuple(str(e)[:40] for e in rest[0][-12:]) if rest else (),
        )
    except (ValueError, TypeError, binascii.Error) as exc:
        raise StateError("unreadable call state") from exc
    return state


# --- rendering -------------------------------------------------------------------------


class Renderer:
    """Turns engine turns into TwiML for one public base URL and hotline number."""

    def __init__(self, base_url: str, hotline_number: str) -> None:
        self.base = base_url.rstrip("/")
        self.caller_id = hotline_number
        self._cached = lru_cache(maxsize=4096)(self._template)

    def step_url(self, token: str, event: str) -> str:
        return f"{self.base}/twilio/step?s={token}&e={event}"

    def render(self, turn: Turn) -> str:
        return self._cached(turn.say, turn.wait).replace(PLACEHOLDER, encode_state(turn.state))

    def _utter(self, parent: VoiceResponse | Gather, items: tuple[Utterance, ...]) -> None:
        for item in items:
            if isinstance(item, Silence):
                parent.pause(length=item.seconds)
            elif item.audio:
                url = item.audio if "://" in item.audio else f"{self.base}/audio/{quote(item.audio)}"
                parent.play(url)
            else:
                parent.say(item.text, voice=item.voice, language=item.locale)

    def _template(self, say: tuple[Utterance, ...], wait: object) -> str:
        r = VoiceResponse()
        if not isinstance(wait, AskKeys):
            self._utter(r, say)
        s = PLACEHOLDER
        match wait:
            case AskKeys():
                g = Gather(
                    input="dtmf speech" if wait.speech_locale else "dtmf",
                    num_digits=wait.num_digits,
                    timeout=wait.timeout,
                    finish_on_key=wait.finish_on_key,
                    action=self.step_url(s, "input"),
                    method="POST",
                    language=wait.speech_locale,
                    hints=", ".join(wait.hints) or None,
                    speech_timeout="auto" if wait.speech_locale else None,
                )
                # Everything said in this turn plays inside the Gather, so a caller who
                # knows the menu can press a key without waiting for the end.
                self._utter(g, say + wait.prompt)
                r.append(g)
                r.redirect(self.step_url(s, "timeout"), method="POST")
            case AskRecording():
                r.record(
                    action=self.step_url(s, "recorded"),
                    method="POST",
                    max_length=wait.max_length,
                    finish_on_key=wait.finish_key,
                    timeout=wait.silence_timeout,
                    play_beep=True,
                    trim="trim-silence",
                    recording_status_callback=f"{self.base}/twilio/recording?s={s}",
                    recording_status_callback_event="completed absent",
                )
                r.redirect(self.step_url(s, "silence"), method="POST")
            case Connect():
                d = r.dial(
                    caller_id=self.caller_id,
                    answer_on_bridge=True,
                    timeout=wait.timeout,
                    action=self.step_url(s, "dialed"),
                    method="POST",
                )
                for number in wait.numbers:
                    d.number(number)
            case End():
                r.hangup()
        return str(r)

    # --- when something went wrong ----------------------------------------------------
    def apology(self, language: str, retry_token: str | None) -> str:
        """What a caller hears when we failed: a short apology, a retry, or a voicemail.

        It needs no flow, no database and no Redis, so it works whatever broke.
        """
        lang = language if language in APOLOGY else "ru"
        text = APOLOGY[lang]
        voice, locale = APOLOGY_VOICES[lang]
        r = VoiceResponse()
        retry = (
            self.step_url(retry_token, "retry") if retry_token
            else f"{self.base}/twilio/step?e=restart&l={lang}"
        )
        g = Gather(num_digits=1, timeout=6, action=retry, method="POST")
        g.say(text["sorry"], voice=voice, language=locale)
        r.append(g)
        r.say(text["record"], voice=voice, language=locale)
        carried = f"&s={retry_token}" if retry_token else ""  # its flow, step and consent
        r.record(
            action=f"{self.base}/twilio/step?e=rescued&l={lang}{carried}",
            method="POST",
            max_length=180,
            finish_on_key="#",
            play_beep=True,
            trim="trim-silence",
            recording_status_callback=f"{self.base}/twilio/recording?l={lang}{carried}",
            recording_status_callback_event="completed absent",
        )
        r.say(text["bye"], voice=voice, language=locale)
        r.hangup()
        return str(r)

    def not_kept(self, language: str) -> str:
        """After a message we could not keep (database and spool both failed): the truth."""
        lang = language if language in APOLOGY else "ru"
        voice, locale = APOLOGY_VOICES[lang]
        r = VoiceResponse()
        r.say(APOLOGY[lang]["not_kept"], voice=voice, language=locale)
        r.hangup()
        return str(r)

    def goodbye(self, language: str) -> str:
        lang = language if language in APOLOGY else "ru"
        voice, locale = APOLOGY_VOICES[lang]
        r = VoiceResponse()
        r.say(APOLOGY[lang]["thanks"], voice=voice, language=locale)
        r.hangup()
        return str(r)


    # --- the operator's leg of a callback ------------------------------------------------
    def whisper(self, case_id: int, language: str, region: str, speak_in: str, action: str) -> str:
        """What the operator hears on answering: the case, the caller's language and region
        (never the number), and "press 1"; no key ends the call (their voicemail, say)."""
        text = OPERATOR_TEXT[speak_in]
        voice, locale = APOLOGY_VOICES[speak_in]
        said = text["whisper"].format(case=case_id, region=region,
                                      language=text["languages"].get(language, language))
        r = VoiceResponse()
        g = Gather(num_digits=1, timeout=8, action=action, method="POST")
        g.say(said, voice=voice, language=locale)
        g.pause(length=1)
        g.say(said, voice=voice, language=locale)
        r.append(g)
        r.say(text["noinput"], voice=voice, language=locale)
        r.hangup()
        return str(r)

    def bridge(self, number: str, caller_id: str, speak_in: str, action: str, callee_url: str,
               timeout: int = 30) -> str:
        """Connect the operator to the caller; the caller's phone shows `caller_id` only.

        Before the bridge, Twilio runs `callee_url`'s TwiML for whoever answers the caller's
        phone (`<Number url>`): a neutral question and a key. Answering-machine detection
        (`machineDetection="Enable"`) tells that webhook `AnsweredBy`, so a voicemail gets
        nothing at all.
        """
        voice, locale = APOLOGY_VOICES[speak_in]
        r = VoiceResponse()
        r.say(OPERATOR_TEXT[speak_in]["connecting"], voice=voice, language=locale)
        d = r.dial(caller_id=caller_id, answer_on_bridge=True, timeout=timeout, action=action,
                   method="POST")
        # Detection gives up after 8 s ("unknown"): the question is then asked, and the key
        # decides; the operator hears ringing meanwhile, not 30 s of Twilio's default.
        d.number(number, url=callee_url, method="POST", machine_detection="Enable",
                 machine_detection_timeout=8)
        return str(r)

    def callee_question(self, language: str, key_url: str, none_url: str) -> str:
        """What the caller's phone hears before the bridge: a call, a key; nothing that names
        the hotline (whoever holds the phone now may not be the caller). No key: hang up."""
        lang = language if language in CALLEE_TEXT else "ru"
        voice, locale = APOLOGY_VOICES[lang]
        r = VoiceResponse()
        g = Gather(num_digits=1, timeout=8, action=key_url, method="POST")
        g.say(CALLEE_TEXT[lang], voice=voice, language=locale)
        g.pause(length=1)
        g.say(CALLEE_TEXT[lang], voice=voice, language=locale)
        r.append(g)
        r.redirect(none_url, method="POST")
        return str(r)

    def operator_done(self, reason: str, speak_in: str) -> str:
        voice, locale = APOLOGY_VOICES.get(speak_in, APOLOGY_VOICES["en"])
        r = VoiceResponse()
        r.say(OPERATOR_TEXT.get(speak_in, OPERATOR_TEXT["en"])[reason], voice=voice, language=locale)
        r.hangup()
        return str(r)


EMPTY = str(VoiceResponse())


def _hangup() -> str:
    r = VoiceResponse()
    r.hangup()
    return str(r)


HANGUP = _hangup()  # the caller's phone, when the bridge must not happen: nothing said

# What whoever answers a caller's phone hears before a callback is bridged: nothing that
# names the hotline (it may be a voicemail, or a phone someone else holds now).
CALLEE_TEXT = {
    "ru": "Вам звонят. Чтобы ответить, нажмите 1.",
    "uk": "Вам телефонують. Щоб відповісти, натисніть 1.",
    "en": "You have a call. To take it, press 1.",
}

# What an operator hears on a callback: in Ukrainian, English or Russian (their first).
OPERATOR_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "whisper": "Hotline callback, case {case}. The caller speaks {language}, region {region}. "
        "Press 1 to connect. Any other key cancels.",
        "noinput": "No key was pressed. The callback is cancelled. Goodbye.",
        "connecting": "Connecting you to the caller now.",
        "ended": "The call has ended. Goodbye.",
        "unanswered": "The caller did not answer. Goodbye.",
        "replayed": "Goodbye.",
        "cancelled": "The callback is cancelled. Goodbye.",
        "gone": "This callback is no longer needed. Goodbye.",
        "window": "The caller's safe hours have ended, so the callback is rescheduled. Goodbye.",
        "error": "Sorry, a technical problem. The callback is cancelled. Goodbye.",
        "languages": {"ru": "Russian", "uk": "Ukrainian", "en": "English"},
    },
    "uk": {
        "whisper": "Зворотний дзвінок гарячої лінії, справа {case}. Абонент говорить {language}, "
        "регіон {region}. Натисніть 1, щоб з'єднатися. Будь-яка інша кнопка скасовує дзвінок.",
        "noinput": "Кнопку не натиснуто. Дзвінок скасовано. До побачення.",
        "connecting": "З'єднуємо вас з абонентом.",
        "ended": "Розмову завершено. До побачення.",
        "unanswered": "Абонент не відповів. До побачення.",
        "replayed": "До побачення.",
        "cancelled": "Дзвінок скасовано. До побачення.",
        "gone": "Цей дзвінок більше не потрібен. До побачення.",
        "window": "Безпечний для абонента час минув, дзвінок перенесено. До побачення.",
        "error": "Вибачте, технічна помилка. Дзвінок скасовано. До побачення.",
        "languages": {"ru": "російською", "uk": "українською", "en": "англійською"},
    },
    "ru": {
        "whisper": "Обратный звонок горячей линии, дело {case}. Абонент говорит {language}, "
        "регион {region}. Нажмите 1, чтобы соединиться. Любая другая кнопка отменяет звонок.",
        "noinput": "Кнопка не нажата. Звонок отменён. До свидания.",
        "connecting": "Соединяем вас с абонентом.",
        "ended": "Разговор завершён. До свидания.",
        "unanswered": "Абонент не ответил. До свидания.",
        "replayed": "До свидания.",
        "cancelled": "Звонок отменён. До свидания.",
        "gone": "Этот звонок больше не нужен. До свидания.",
        "window": "Безопасное для абонента время закончилось, звонок перенесён. До свидания.",
        "error": "Извините, техническая ошибка. Звонок отменён. До свидания.",
        "languages": {"ru": "по-русски", "uk": "по-украински", "en": "по-английски"},
    },
}

APOLOGY_VOICES = {
    "ru": ("Polly.Tatyana", "ru-RU"),
    "uk": ("Google.uk-UA-Standard-A", "uk-UA"),
    "en": ("Polly.Joanna", "en-US"),
}
APOLOGY = {
    "ru": {
        "sorry": "Извините, у нас техническая ошибка. Чтобы попробовать ещё раз, нажмите 1. "
        "Или оставайтесь на линии и оставьте сообщение.",
        "record": "Говорите после сигнала. Закончив, нажмите решётку.",
        "bye": "Мы не услышали сообщения. Пожалуйста, позвоните ещё раз. До свидания.",
        "thanks": "Спасибо, ваше сообщение записано. До свидания.",
        "not_kept": "Извините, из-за технической ошибки мы не можем подтвердить, что ваше "
        "сообщение сохранено. Пожалуйста, позвоните ещё раз позже. До свидания.",
    },
    "uk": {
        "sorry": "Вибачте, у нас технічна помилка. Щоб спробувати ще раз, натисніть 1. "
        "Або залишайтеся на лінії та залиште повідомлення.",
        "record": "Говоріть після сигналу. Закінчивши, натисніть решітку.",
        "bye": "Ми не почули повідомлення. Будь ласка, зателефонуйте ще раз. До побачення.",
        "thanks": "Дякуємо, ваше повідомлення записано. До побачення.",
        "not_kept": "Вибачте, через технічну помилку ми не можемо підтвердити, що ваше "
        "повідомлення збережено. Будь ласка, зателефонуйте ще раз пізніше. До побачення.",
    },
    "en": {
        "sorry": "Sorry, we have a technical problem. To try again, press 1. "
        "Or stay on the line to leave a message.",
        "record": "Speak after the tone. When you are done, press the hash key.",
        "bye": "We did not hear a message. Please call again. Goodbye.",
        "thanks": "Thank you, your message has been recorded. Goodbye.",
        "not_kept": "Sorry, because of a technical problem we cannot confirm that your message "
        "was saved. Please call again later. Goodbye.",
    },
}


# --- signatures ------------------------------------------------------------------------


class _Params(dict[str, list[str]]):
    """Form values in the shape RequestValidator reads without raising per parameter."""

    def getall(self, name: str) -> list[str]:
        return self[name]


class SignatureChecker:
    """Checks X-Twilio-Signature as twilio's RequestValidator does.

    The common case, Twilio's HMAC-SHA1 over the URL exactly as configured, is computed
    here in one pass: the same string RequestValidator.compute_signature builds (a test
    holds the two equal on random input), at a third of its cost on the webhook hot path.
    Anything else, a mismatch or another algorithm, goes through `RequestValidator.validate`,
    which also tries the URL with and without an explicit port.

    SharedKey signing (Twilio's Webhooks configuration API): when a Webhook Rule matches,
    Twilio signs the same string with a SharedKey's secret instead of the auth token, with
    the algorithm the Setting names, and says which in `X-Twilio-Webhooks-Signature-Settings:
    key=<id>,algorithm=HMAC_SHA256`. Such a request is checked with that key's secret from
    TWILIO_WEBHOOK_SHARED_KEYS; a key we do not hold is refused with a line saying so.
    """

    def __init__(self, auth_token: str, shared_keys: tuple[tuple[str, str], ...] = ()) -> None:
        self.validator = RequestValidator(auth_token)
        self._key = auth_token.encode()
        self._shared = {key_id: RequestValidator(secret) for key_id, secret in shared_keys}

    def expected(self, url: str, params: dict[str, list[str]]) -> str:
        """Base64 HMAC-SHA1 of the URL then each name+value, sorted, duplicates once."""
        payload = url + "".join(
            name + value for name in sorted(params) for value in sorted(set(params[name]))
        )
        digest = hmac.new(self._key, payload.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def refusal(
        self, url: str, params: dict[str, list[str]], signature: str, settings_header: str = ""
    ) -> str | None:
        """None when the request is Twilio's; otherwise why not, for the log (no values)."""
        if not signature:
            return "missing signature"
        if settings_header:
            return self._shared_key(url, params, signature, settings_header)
        if hmac.compare_digest(self.expected(url, params).encode(), signature.encode()):
            return None
        if self.validator.validate(url, _Params(params), signature, HMAC_SHA1):
            return None
        return "forged or mismatched signature"

    def _shared_key(self, url: str, params: dict[str, list[str]], signature: str,
                    header: str) -> str | None:
        fields = dict(part.strip().partition("=")[::2] for part in header.split(","))
        key_id = SAFE_ID.sub("?", fields.get("key", "").strip())[:80]
        algorithm = get_signature_algorithm(header).upper()
        if algorithm not in SHARED_KEY_ALGORITHMS:
            return (f"signed with Twilio SharedKey {key_id or '(no key id)'} and algorithm "
                    f"{SAFE_ID.sub('?', algorithm)[:30]}, which this version cannot check")
        validator = self._shared.get(key_id)
        if validator is None:
            return (f"signed with Twilio SharedKey {key_id or '(no key id)'}, which "
                    "TWILIO_WEBHOOK_SHARED_KEYS does not hold: add `id:secret` for it, or "
                    "remove the Webhook Rule that signs these URLs with it")
        if validator.validate(url, _Params(params), signature, algorithm):
            return None
        return f"forged or mismatched signature (Twilio SharedKey {key_id})"

    def valid(
        self, url: str, params: dict[str, list[str]], signature: str, settings_header: str = ""
    ) -> bool:
        return self.refusal(url, params, signature, settings_header) is None

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(self.validator.compute_signature(url, params))


SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")  # what of a header may reach a log line
SHARED_KEY_ALGORITHMS = ("HMAC_SHA1", "HMAC_SHA256")
