"""The console's two languages: Ukrainian (the default: the operators' own) and English.

Messages are written in English in the templates and the code (`_("Sign in")`) and looked up
here; a message missing here is shown in English (tests/test_console.py checks that every
one has its Ukrainian). A dictionary and no gettext catalogue: two languages, no build step.
"""

from __future__ import annotations

LOCALES = ("uk", "en")

UK: dict[str, str] = {
    "Hotline console": "Консоль гарячої лінії",
    "Sign in": "Увійти",
    "Name": "Ім'я",
    "Password": "Пароль",
    "Code": "Код",
    "Confirm": "Підтвердити",
    "Enter the six-digit code from your authenticator app.":
        "Введіть шестизначний код із застосунку-автентифікатора.",
    "Set up your second factor": "Налаштуйте другий фактор",
    "Scan this code with an authenticator app (such as Aegis, FreeOTP or Google Authenticator), "
    "then enter the six digits it shows.":
        "Відскануйте цей код застосунком-автентифікатором (Aegis, FreeOTP, Google Authenticator), "
        "потім введіть шість цифр, які він покаже.",
    "Or type this key:": "Або введіть цей ключ:",
    "wrong name or password": "неправильне ім'я або пароль",
    "wrong code": "неправильний код",
    "too many failed attempts: wait %(seconds)s s and try again":
        "забагато невдалих спроб: зачекайте %(seconds)s с і спробуйте знову",
    "only supervisors and admins change operators":
        "змінювати операторів можуть лише супервізори й адміністратори",
    "only an admin makes admins": "призначати адміністраторів може лише адміністратор",
    "a supervisor changes operators, not admins or other supervisors":
        "супервізор змінює операторів, але не адміністраторів чи інших супервізорів",
    "only an admin changes a phone number": "змінювати номер телефону може лише адміністратор",
    "Your session has ended. Please sign in again.": "Сеанс завершено. Увійдіть знову.",
    "Sign out": "Вийти",
    "Queue": "Черга",
    "Dashboard": "Огляд",
    "Operators": "Оператори",
    "Audit log": "Журнал доступу",
    "Flows": "Сценарії",
    "Case": "Справа",
    "Cases": "Справи",
    "Status": "Стан",
    "Region": "Регіон",
    "Language": "Мова",
    "Age": "Вік",
    "Received": "Отримано",
    "Attempts": "Спроби",
    "Operator": "Оператор",
    "Callback": "Зворотний дзвінок",
    "Consent": "Згода",
    "Filter": "Фільтр",
    "Search by case number": "Пошук за номером справи",
    # the caller's intake answers (ivr/console/intake.py; the answers' own labels are the flow's)
    "Caller's answer": "Відповідь абонента",
    "Caller's answers": "Відповіді абонента",
    "The caller's answers are sealed: the filter looks through the newest 1,000 cases of this view.":
        "Відповіді абонента зашифровані: фільтр переглядає 1000 найновіших справ цього списку.",
    "Urgent: this case is first in the queue and goes to the next operator sooner if nobody acts on it.":
        "Термінова: ця справа перша в черзі й раніше переходить до наступного оператора, якщо ніхто "
        "нею не займеться.",
    "all": "усі",
    "open": "відкриті",
    "closed": "закриті",
    "mine": "мої",
    "Open cases of mine": "Мої відкриті справи",
    "Open in my regions": "Відкриті в моїх регіонах",
    "Unassigned": "Без оператора",
    "Callbacks due": "Дзвінки до виконання",
    "Overdue": "Прострочені",
    "No cases.": "Справ немає.",
    "unassigned": "без оператора",
    "Transcript": "Розшифровка",
    "No transcript": "Розшифровки немає",
    "Machine transcription: it can be wrong; the recording is what counts.":
        "Машинна розшифровка: вона може помилятися; зважає запис.",
    "Engine": "Модель",
    "confidence": "упевненість",
    "spoken": "мова розмови",
    "chose": "обрано в меню",
    "marked": "позначено",
    "words the model was unsure of": "слова, в яких модель не впевнена",
    "No speech was heard: listen to the recording.": "Мовлення не почуто: прослухайте запис.",
    "Phrases the model invents (subtitle credits and the like) were removed.":
        "Фрази, які модель вигадує (титри субтитрів тощо), прибрано.",
    "Sound captions the model invents (such as 'music') were removed.":
        "Підписи звуків, які модель вигадує (на кшталт «музика»), прибрано.",
    "A phrase the model repeated over and over is kept once.":
        "Фразу, яку модель повторювала знову й знову, залишено один раз.",
    "Recording": "Запис",
    "Your browser cannot play this recording.": "Ваш браузер не може відтворити цей запис.",
    "Routed because": "Чому сюди",
    "Caller's consent": "Згода абонента",
    "any time": "будь-коли",
    "daytime only": "лише вдень",
    "no callback": "не передзвонювати",
    "Safe hours": "Безпечний час",
    "Timeline": "Хронологія",
    "Notes": "Нотатки",
    "Add note": "Додати нотатку",
    "Call back": "Передзвонити",
    "Your phone will ring; press 1 to be connected. The caller sees only the hotline's number.":
        "Ваш телефон задзвонить; натисніть 1, щоб з'єднатися. Абонент бачить лише номер гарячої лінії.",
    "Outcome": "Результат",
    "Set outcome": "Зберегти результат",
    "Pass on": "Передати іншому",
    "Reassign to": "Передати",
    "Reassign": "Передати",
    "Close case": "Закрити справу",
    "Reason": "Причина",
    "Callback attempts": "Спроби дзвінка",
    "The caller's number is never shown.": "Номер абонента ніколи не показується.",
    "Saved.": "Збережено.",
    "Calling your phone now.": "Телефонуємо на ваш телефон.",
    "On duty": "На зміні",
    "Off duty": "Не на зміні",
    "Capacity": "Ліміт",
    "Hours": "Години",
    "Role": "Роль",
    "Regions": "Регіони",
    "Languages": "Мови",
    "Set on duty": "На зміну",
    "Set off duty": "Зі зміни",
    "Open cases": "Відкриті справи",
    "Disabled": "Вимкнено",
    "Edit": "Змінити",
    "Time zone": "Часовий пояс",
    "New phone number (kept encrypted; empty: unchanged)":
        "Новий номер телефону (зберігається зашифрованим; порожньо: без змін)",
    "Active": "Активний",
    "Save": "Зберегти",
    "Add an operator": "Додати оператора",
    "Phone number (kept encrypted)": "Номер телефону (зберігається зашифрованим)",
    "Add": "Додати",
    "The new operator sets a password with `ivr operators password ID` and enrolls an "
    "authenticator at the first sign-in.":
        "Новий оператор отримує пароль командою `ivr operators password ID` і налаштовує "
        "автентифікатор під час першого входу.",
    "When": "Коли",
    "Who": "Хто",
    "What": "Що",
    "Version": "Версія",
    "Problems": "Проблеми",
    "None": "Немає",
    "Calls per hour (last 24 hours)": "Дзвінки за годину (останні 24 години)",
    "Cases per region (last 30 days)": "Справи за регіонами (останні 30 днів)",
    "Calls per region (last 30 days)": "Дзвінки за регіонами (останні 30 днів)",
    "Languages (last 30 days)": "Мови (останні 30 днів)",
    "Voicemails per day (last 14 days)": "Голосові повідомлення за день (останні 14 днів)",
    "Time to first callback": "Час до першого дзвінка",
    "median": "медіана",
    "minutes": "хвилин",
    "no callbacks yet": "дзвінків ще не було",
    "Not found": "Не знайдено",
    "There is no such page, or it is not yours to see.": "Такої сторінки немає, або вона не для вас.",
    "Forbidden": "Заборонено",
    "The form has expired or was not sent from this console. Please try again.":
        "Форма застаріла або надіслана не з цієї консолі. Спробуйте ще раз.",
    "English": "English",
    "Українська": "Українська",
    "helped": "допомогли",
    "information given": "надали інформацію",
    "surrender arranged": "організовано здачу в полон",
    "no contact": "не вдалося зв'язатися",
    "not relevant": "не стосується",
    "new": "нова",
    "transcribed": "розшифрована",
    "transcription_failed": "не розшифрована",
    "routed": "призначена",
    "waiting": "очікує",
    "calling": "дзвонимо",
    "queued": "у черзі",
    "scheduled": "заплановано",
    "answered": "відповів",
    "gave_up": "припинено",
    "none": "немає",
}

MESSAGES = {"uk": UK, "en": {}}


def translate(locale: str, message: str) -> str:
    return MESSAGES.get(locale, {}).get(message, message)
