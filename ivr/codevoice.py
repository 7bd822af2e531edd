"""What the caller hears of case codes and PINs, and the TwiML that asks for them.

The code is said only in the answer to the recording's webhook (it exists nowhere else to be
said again), digit by digit, twice; the PIN prompts that follow post their digits in Twilio's
request body, and their action URLs carry only the call's ordinary state token: the call is
linked to its case server-side, by CallSid (ivr/casecode.py, CodeEntry).
"""

from __future__ import annotations

from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.flow import Language

# The hotline's own words, in each language the hotline speaks (English for any other).
PHRASES: dict[str, dict[str, str]] = {
    "ru": {
        "code": "Ваш код дела. Запишите его и никому не показывайте: с этим кодом и PIN-кодом "
                "можно позвонить снова и узнать о вашем деле. Код:",
        "again": "Повторяю код:",
        "choose": "Теперь придумайте PIN-код из 4–8 цифр, наберите его и нажмите решётку. "
                  "Чтобы обойтись без PIN-кода, просто нажмите решётку.",
        "confirm": "Наберите этот PIN-код ещё раз и нажмите решётку.",
        "invalid": "PIN-код должен состоять из 4–8 цифр.",
        "mismatch": "PIN-коды не совпали. Попробуем ещё раз.",
        "set": "PIN-код сохранён. Чтобы позвонить снова о своём деле, в главном меню нажмите 5, "
               "затем наберите код и PIN-код.",
        "skipped": "Без PIN-кода к вашему делу по телефону не сможет обратиться никто, даже вы: "
                   "этот код больше не действует.",
        "pin": "Наберите PIN-код и нажмите решётку.",
        "locked": "Слишком много неверных PIN-кодов: это дело сейчас закрыто для звонков. "
                  "Попробуйте позже.",
        "busy": "Сейчас ввод кодов временно недоступен. Пожалуйста, позвоните позже.",
    },
    "uk": {
        "code": "Ваш код справи. Запишіть його і нікому не показуйте: з цим кодом і PIN-кодом "
                "можна зателефонувати знову й дізнатися про вашу справу. Код:",
        "again": "Повторюю код:",
        "choose": "Тепер придумайте PIN-код із 4–8 цифр, наберіть його й натисніть решітку. "
                  "Щоб обійтися без PIN-коду, просто натисніть решітку.",
        "confirm": "Наберіть цей PIN-код ще раз і натисніть решітку.",
        "invalid": "PIN-код має складатися з 4–8 цифр.",
        "mismatch": "PIN-коди не збіглися. Спробуймо ще раз.",
        "set": "PIN-код збережено. Щоб зателефонувати знову щодо своєї справи, у головному меню "
               "натисніть 5, потім наберіть код і PIN-код.",
        "skipped": "Без PIN-коду до вашої справи телефоном не зможе звернутися ніхто, навіть ви: "
                   "цей код більше не діє.",
        "pin": "Наберіть PIN-код і натисніть решітку.",
        "locked": "Забагато неправильних PIN-кодів: ця справа зараз закрита для дзвінків. "
                  "Спробуйте пізніше.",
        "busy": "Зараз введення кодів тимчасово недоступне. Будь ласка, зателефонуйте пізніше.",
    },
    "en": {
        "code": "Here is your case code. Write it down and show it to nobody: with this code and "
                "a PIN you can call again and hear about your case. The code is:",
        "again": "Once more, the code is:",
        "choose": "Now choose a PIN of 4 to 8 digits, enter it, then press the hash key. To go "
                  "without a PIN, just press the hash key.",
        "confirm": "Enter the same PIN again, then press the hash key.",
        "invalid": "A PIN has 4 to 8 digits.",
        "mismatch": "The two PINs were different. Let us try again.",
        "set": "Your PIN is saved. To call again about your case, press 5 in the main menu, then "
               "enter your code and your PIN.",
        "skipped": "Without a PIN nobody can reach your case by phone, not even you: this code no "
                   "longer works.",
        "pin": "Enter your PIN, then press the hash key.",
        "locked": "Too many wrong PINs: this case cannot be reached by phone for now. Please try "
                  "again later.",
        "busy": "Entering codes is not possible right now. Please call again later.",
    },
}


def phrase(language: str, name: str) -> str:
    return PHRASES.get(language, PHRASES["en"])[name]


def _say(parent: VoiceResponse | Gather, text: str, voice: Language) -> None:
    parent.say(text, voice=voice.voice, language=voice.locale)


def say_code(r: VoiceResponse, code: str, language: str, voice: Language) -> None:
    """The code twice, in groups of three digits said one by one with a pause after each."""
    for intro in ("code", "again"):
        _say(r, phrase(language, intro), voice)
        r.pause(length=1)
        for i in range(0, len(code), 3):
            _say(r, ", ".join(code[i:i + 3]), voice)
            r.pause(length=1)


def ask_pin(r: VoiceResponse, action: str, language: str, voice: Language, ask: str,
            before: tuple[str, ...] = ()) -> str:
    """A keypad-only Gather for a PIN (its digits go in the request body, never the URL);
    silence goes to the same action with no digits."""
    for name in before:
        _say(r, phrase(language, name), voice)
    g = Gather(input="dtmf", num_digits=PIN_WIDTH, timeout=10, finish_on_key="#",
               action=action, method="POST")
    _say(g, phrase(language, ask), voice)
    r.append(g)
    r.redirect(action, method="POST")
    return str(r)


PIN_WIDTH = 9  # one key more than the longest PIN: Twilio waits for the `#`


def paused(twiml: str, seconds: int) -> str:
    """The same document, after a silence the caller cannot skip (outside any Gather)."""
    return twiml.replace("<Response>", f'<Response><Pause length="{seconds}" />', 1)
