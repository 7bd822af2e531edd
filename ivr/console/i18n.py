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
    # Actions that cannot go wrong by one click (issue 12)
    "— choose —": "— оберіть —",
    "Choose an outcome first: nothing was saved.": "Спершу оберіть результат: нічого не збережено.",
    "Why is it closed?": "Чому справу закрито?",
    "I understand: %(days)s days after closing, the recording, the transcript, the notes and the "
    "caller's number are destroyed for good. Until then the case can be reopened.":
        "Я розумію: через %(days)s дн. після закриття запис, розшифровку, нотатки й номер абонента "
        "буде знищено назавжди. Доти справу можна відкрити знову.",
    "Say why the case is closed: it was not closed.":
        "Напишіть, чому справу закрито: її не закрито.",
    "Tick the box: the case's data will be destroyed. It was not closed.":
        "Поставте позначку: дані справи буде знищено. Справу не закрито.",
    "The case was already closed.": "Справа вже була закрита.",
    "The case is closed.": "Справу закрито.",
    "Closed: its data is destroyed %(days)s days after closing. Until then it can be reopened.":
        "Закрита: її дані буде знищено через %(days)s дн. після закриття. Доти її можна відкрити знову.",
    "Closed, and its data has been destroyed: it cannot be reopened.":
        "Закрита, і її дані вже знищено: відкрити її знову не можна.",
    "Why is it reopened?": "Чому справу відкрито знову?",
    "Reopen case": "Відкрити справу знову",
    "Say why the case is reopened: it was not reopened.":
        "Напишіть, чому справу відкрито знову: її не відкрито.",
    "Its data has been destroyed: the case cannot be reopened.":
        "Дані справи вже знищено: відкрити її знову не можна.",
    "The case is not closed.": "Справа не закрита.",
    "The case is open again.": "Справу знову відкрито.",
    "This case has no operator yet: whoever takes it calls the caller back.":
        "У справи ще немає оператора: передзвонює той, хто її візьме.",
    "Take this case": "Взяти справу",
    "The case is yours now.": "Тепер це ваша справа.",
    "This case is not in your regions and languages: a supervisor can assign it.":
        "Ця справа не з ваших регіонів і мов: її може призначити супервізор.",
    "Someone else took this case a moment ago.": "Цю справу щойно взяв хтось інший.",
    "The case could not be taken.": "Справу не вдалося взяти.",
    "This case has no operator yet: take it or assign it to someone, then call back.":
        "У справи ще немає оператора: візьміть її собі або призначте комусь, тоді передзвоніть.",
    "Calling back takes the case.": "Зворотний дзвінок робить справу вашою.",
    "Assign to": "Призначити",
    "Assign": "Призначити",
    "case closed": "закрита",
    # Why a callback did not start (ivr/callbacks.py CallbackError)
    "there is no such case": "такої справи немає",
    "the case is closed": "справа закрита",
    "the caller did not agree to a callback": "абонент не погодився на зворотний дзвінок",
    "the caller's number was withheld": "номер абонента приховано",
    "the case has no operator yet: take it or assign it first":
        "у справи ще немає оператора: спершу візьміть її собі або призначте комусь",
    "a callback is ringing now": "зворотний дзвінок уже триває",
    "gave up after %(attempts)s attempts": "припинено після %(attempts)s спроб",
    "outside the caller's safe hours (daytime %(hours)s, %(tz)s); scheduled for %(when)s their time":
        "поза безпечним для абонента часом (удень %(hours)s, %(tz)s); дзвінок заплановано на "
        "%(when)s за місцевим часом абонента",
    "the call to your phone could not be placed: try again in a few minutes":
        "не вдалося зателефонувати на ваш телефон: спробуйте ще раз за кілька хвилин",
    # The caller's path (ivr/console/story.py)
    "The caller's path": "Шлях абонента",
    "This call's path through the menus was not kept (a call from before it was, or a message "
    "left after a fault).":
        "Шлях цього дзвінка меню не збережено (дзвінок, зроблений до того, як шлях почали "
        "зберігати, або повідомлення, залишене після збою).",
    "Chose the language: %(language)s.": "Обрано мову: %(language)s.",
    "Did not choose a language; the menus spoke %(language)s.":
        "Мову не обрано; меню звучало мовою: %(language)s.",
    "Topic: %(topic)s.": "Тема: %(topic)s.",
    "called up or mobilised": "призов або мобілізація",
    "how to surrender safely": "як безпечно здатися в полон",
    "Asked for an operator: was put through to one.": "Спроба з'єднатися з оператором: з'єднано.",
    "Asked for an operator: operators were rung, nobody answered (busy).":
        "Спроба з'єднатися з оператором: операторам дзвонили, ніхто не відповів (зайнято).",
    "Asked for an operator: out of the operators' hours.":
        "Спроба з'єднатися з оператором: поза робочими годинами операторів.",
    "Asked for an operator: nobody was on duty.":
        "Спроба з'єднатися з оператором: на зміні нікого не було.",
    "Did not answer a menu (silence or wrong keys) and was taken on.":
        "У меню не було відповіді (тиша або не ті кнопки), і дзвінок пішов далі.",
    "Did not ask for an operator.": "Спроби з'єднатися з оператором не було.",
    "Left a message of %(seconds)s s.": "Залишено повідомлення тривалістю %(seconds)s с.",
    "Left a message.": "Залишено повідомлення.",
    "Earlier cases from the same number": "Попередні справи з того самого номера",
    "%(count)s in regions that are not yours": "%(count)s — у регіонах, які не ваші",
}

# The callers' languages named in the reader's own (the caller's path says which they chose).
LANGUAGE_NAMES = {
    "uk": {"ru": "російська", "uk": "українська", "en": "англійська"},
    "en": {"ru": "Russian", "uk": "Ukrainian", "en": "English"},
}

MESSAGES = {"uk": UK, "en": {}}


def translate(locale: str, message: str) -> str:
    return MESSAGES.get(locale, {}).get(message, message)
