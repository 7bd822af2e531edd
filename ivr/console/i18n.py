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
    "Audit log": "Журнал дій",
    "Flows": "Сценарії",
    "Case": "Справа",
    "Cases": "Справи",
    "Status": "Стан",
    "Region": "Регіон",
    "Language": "Мова",
    "Age": "Давність",
    "Received": "Отримано",
    "Attempts": "Спроби",
    "Operator": "Оператор",
    "Callback": "Зворотний дзвінок",
    "Consent": "Згода",
    "Filter": "Показати",
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
    "Open cases of mine": "Мої відкриті справи",
    "Open in my regions": "Відкриті в моїх регіонах",
    "Unassigned": "Без оператора",
    "Callbacks due": "Час передзвонити",
    "Overdue": "Прострочені",
    "No cases.": "Справ немає.",
    "unassigned": "без оператора",
    "Transcript": "Розшифровка",
    "No transcript": "Розшифровки немає",
    "Machine transcription: it can be wrong; the recording is what counts.":
        "Машинна розшифровка може помилятися; вирішальним є запис.",
    "Engine": "Модель",
    "confidence": "упевненість",
    "spoken": "мова розмови",
    "chose": "обрано в меню",
    "marked": "позначено",
    "words the model was unsure of": "слова, в яких модель не впевнена",
    "No speech was heard: listen to the recording.": "Мовлення не почуто: прослухайте запис.",
    "Phrases the model invents (subtitle credits and the like) were removed.":
        "Фрази, які модель вигадує (як-от «Субтитри зробив…»), прибрано.",
    "Sound captions the model invents (such as 'music') were removed.":
        "Підписи звуків, які модель вигадує (на кшталт «музика»), прибрано.",
    "A phrase the model repeated over and over is kept once.":
        "Фразу, яку модель повторювала знову й знову, залишено один раз.",
    "Recording": "Запис",
    "Your browser cannot play this recording.": "Ваш браузер не може відтворити цей запис.",
    "Routed because": "Причина розподілу",
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
    "Case code": "Код справи",
    "locked after wrong PINs until": "заблокована після неправильних PIN-кодів до",
    "the caller can reach it by phone with a code and PIN":
        "той, хто телефонував, може звернутися до неї телефоном за кодом і PIN-кодом",
    "none: not reachable by phone": "немає: телефоном до неї не звернутися",
    "Many wrong case codes were entered in the last minutes: every code entry is slowed down. "
    "No caller is named; nothing needs doing unless it goes on.":
        "За останні хвилини введено багато неправильних кодів справ: кожне введення коду "
        "тепер сповільнене. Жодного абонента не названо; нічого робити не треба, якщо це не "
        "триватиме.",
    "Set outcome": "Зберегти результат",
    "Pass on": "Передати іншому",
    "Reassign to": "Передати оператору",
    "Reassign": "Передати",
    "Close case": "Закрити справу",
    "Reason": "Причина",
    "Callback attempts": "Спроби зворотного дзвінка",
    "The caller's number is never shown.": "Номер абонента ніколи не показується.",
    "Saved.": "Збережено.",
    "Calling your phone now.": "Телефонуємо на ваш телефон.",
    "On duty": "На зміні",
    "Off duty": "Не на зміні",
    "Capacity": "Ліміт справ",
    "Hours": "Години роботи",
    "Role": "Роль",
    "Regions": "Регіони",
    "Languages": "Мови",
    "Set on duty": "Поставити на зміну",
    "Set off duty": "Зняти зі зміни",
    "Open cases": "Відкриті справи",
    "Disabled": "Вимкнений",
    "Edit": "Змінити",
    "Time zone": "Часовий пояс",
    "New phone number (kept encrypted; empty: unchanged)":
        "Новий номер телефону (зберігається зашифрованим; порожньо: без змін)",
    "Active": "Активний",
    "Save": "Зберегти",
    "Add an operator": "Додати оператора",
    "Phone number (kept encrypted)": "Номер телефону (зберігається зашифрованим)",
    "Add": "Додати",
    "The admin sets the new operator's password on the server; the operator sets up an "
    "authenticator app at the first sign-in.":
        "Пароль новому операторові встановлює адміністратор на сервері; застосунок-автентифікатор "
        "оператор налаштовує під час першого входу.",
    "When": "Коли",
    "Who": "Хто",
    "What": "Що",
    "Version": "Версія",
    "Problems": "Проблеми",
    "None": "Немає",
    "Calls per hour (last 24 hours)": "Дзвінки за годинами (останні 24 години)",
    "Cases per region (last 30 days)": "Справи за регіонами (останні 30 днів)",
    "Calls per region (last 30 days)": "Дзвінки за регіонами (останні 30 днів)",
    "Languages (last 30 days)": "Мови (останні 30 днів)",
    "Voicemails per day (last 14 days)": "Голосові повідомлення за днями (останні 14 днів)",
    "Time to first callback": "Час до першого зворотного дзвінка",
    "median": "медіана",
    "minutes": "хв",
    "no callbacks yet": "зворотних дзвінків ще не було",
    "Not found": "Не знайдено",
    "There is no such page, or it is not yours to see.": "Такої сторінки немає, або вона не для вас.",
    "Forbidden": "Заборонено",
    "The form has expired or was not sent from this console. Please try again.":
        "Форма застаріла або надіслана не з цієї консолі. Спробуйте ще раз.",
    "English": "Англійська",  # the language; the switch names each language in itself (base.html)
    "helped": "допомогли",
    "information given": "надали інформацію",
    "surrender arranged": "організовано здачу в полон",
    "no contact": "не вдалося зв'язатися",
    "not relevant": "не за темою",
    # filters (of cases: plural)
    "open cases": "відкриті справи",
    "my open cases": "мої відкриті справи",
    "closed cases": "закриті справи",
    "all cases": "усі справи",
    # a case's state (ivr/console/wording.py state): "справа" is feminine
    "closed": "закрита",
    "assigned to %(name)s": "призначена: %(name)s",
    "waiting for an operator": "чекає на оператора",
    "being processed": "обробляється",
    # a case's callback
    "no callback planned": "не заплановано",
    "waiting for its operator": "чекає на дзвінок оператора",
    "calling now": "дзвонимо",
    "about to ring": "ось-ось задзвонить",
    "scheduled": "заплановано",
    "the caller answered": "абонент відповів",
    "no more attempts": "спроби вичерпано",
    "attempts": "спроб",
    "the caller's time now": "в абонента зараз",
    "Times are shown in the time zone": "Час показано в часовому поясі",
    "%(n)s min": "%(n)s хв",
    "%(n)s h": "%(n)s год",
    "%(n)s d": "%(n)s дн.",
    "%(n)s s": "%(n)s с",
    # names
    "Russian": "Російська",
    "Ukrainian": "Українська",
    "operator": "оператор",
    "supervisor": "супервізор",
    "admin": "адміністратор",
    "admin (server command)": "адміністратор (команда на сервері)",
    "system": "система",
    "caller": "абонент",
    "Mon": "пн", "Tue": "вт", "Wed": "ср", "Thu": "чт", "Fri": "пт", "Sat": "сб", "Sun": "нд",
    "daily": "щодня",
    "always": "завжди",
    "the name": "ім'я",
    "phone number": "номер телефону",
    "languages": "мови",
    "regions": "регіони",
    "the time zone": "часовий пояс",
    "hours": "години роботи",
    "capacity": "ліміт справ",
    "role": "роль",
    "on duty": "на зміні",
    "active": "активний",
    # the timeline and the audit log (ivr/console/wording.py ACTIONS, OUTCOMES)
    "call to the hotline": "дзвінок на гарячу лінію",
    "case created": "справу створено",
    "the caller answered about a callback": "абонент відповів щодо зворотного дзвінка",
    "transcribed": "розшифровано",
    "could not be transcribed": "не вдалося розшифрувати",
    "the recording could not be fetched or read": "запис не вдалося отримати або прочитати",
    "found at Twilio without a report": "знайдено у Twilio без повідомлення",
    "given to an operator": "призначено операторові",
    "no operator could take it": "жоден оператор не може її взяти",
    "passed to another operator": "передано іншому операторові",
    "SMS sent": "SMS надіслано",
    "SMS not sent": "SMS не надіслано",
    "supervisors told: no operator": "супервізорам повідомлено: немає оператора",
    "transcript read": "розшифровку прочитано",
    "recording listened to": "запис прослухано",
    "note added": "нотатку додано",
    "outcome set": "результат збережено",
    "case closed": "справу закрито",
    "the caller's data destroyed (retention)": "дані абонента знищено (строк зберігання минув)",
    "callback scheduled": "зворотний дзвінок заплановано",
    "callback started": "зворотний дзвінок розпочато",
    "callback: the caller answered": "зворотний дзвінок: абонент відповів",
    "callback: the caller's line was busy": "зворотний дзвінок: лінія абонента зайнята",
    "callback: the caller did not answer": "зворотний дзвінок: абонент не відповів",
    "callback: the call failed": "зворотний дзвінок: не вдалося з'єднатися",
    "callback: cancelled": "зворотний дзвінок скасовано",
    "callback: the operator's line was busy": "зворотний дзвінок: лінія оператора зайнята",
    "callback: the operator did not answer": "зворотний дзвінок: оператор не відповів",
    "callback: the operator's phone could not be called":
        "зворотний дзвінок: не вдалося додзвонитися операторові",
    "callback: the operator did not press 1": "зворотний дзвінок: оператор не натиснув 1",
    "callback: the caller did not confirm": "зворотний дзвінок: абонент не підтвердив",
    "callback: no more attempts": "зворотний дзвінок: спроби вичерпано",
    "signed in": "вхід",
    "signed out": "вихід",
    "second factor set up": "другий фактор налаштовано",
    "second factor reset": "другий фактор скинуто",
    "password set": "пароль встановлено",
    "many failed sign-ins": "багато невдалих спроб входу",
    "operator added": "оператора додано",
    "operator changed": "оператора змінено",
    "operator's phone number changed": "номер телефону оператора змінено",
    "operators' phone numbers read": "номери телефонів операторів переглянуто",
    "the caller's line was busy": "лінія абонента зайнята",
    "the caller did not answer": "абонент не відповів",
    "the call failed": "не вдалося з'єднатися",
    "cancelled": "скасовано",
    "the operator's line was busy": "лінія оператора зайнята",
    "the operator did not answer": "оператор не відповів",
    "the operator's phone could not be called": "не вдалося додзвонитися операторові",
    "the operator did not press 1": "оператор не натиснув 1",
    "the caller did not confirm": "абонент не підтвердив",
    ", %(times)s, last %(last)s": ", %(times)s, востаннє %(last)s",
    # reasons and refusals (ivr/reasons.py ENGLISH); a technical `detail` is for the English
    "region %(region)s, language %(language)s": "регіон: %(region)s, мова: %(language)s",
    "%(candidates)s candidate(s)": "кандидатів: %(candidates)s",
    "(not %(excluded)s offered before)": "(без тих, кому вже пропонували: %(excluded)s)",
    "%(on_duty)s on duty": "на зміні: %(on_duty)s",
    "%(with_room)s with room": "з вільним місцем: %(with_room)s",
    "chose %(name)s (%(open)s open case(s), least loaded)":
        "обрано: %(name)s (відкритих справ: %(open)s, найменше навантаження)",
    "chose %(name)s (%(open)s open case(s), least loaded, longest since a case)":
        "обрано: %(name)s (відкритих справ: %(open)s, найменше навантаження, найдовше без нової справи)",
    "unassigned, escalated to supervisors": "без оператора, передано супервізорам",
    "taken by %(name)s": "взято собі: %(name)s",
    "reopened by its operator": "знову відкрита її оператором",
    "reopened: back to its operator": "знову відкрита: повернута її операторові",
    "case reopened": "справу знову відкрито",
    "case taken": "справу взято",
    "urgent (caller's answer): first in the queue, re-offered sooner":
        "термінова (за відповіддю абонента): перша в черзі, іншому оператору пропонується раніше",
    "took the case to call back (%(name)s)": "справу взято, щоб передзвонити (%(name)s)",
    "reassigned by a supervisor (%(name)s)": "передано супервізором (%(name)s)",
    "to operator %(operator)s": "операторові: %(operator)s",
    "not transcribed: no model for %(language)s":
        "не розшифровано: немає моделі розпізнавання для мови «%(language)s»",
    "not transcribed: %(detail)s": "не розшифровано: запис не вдалося розпізнати",
    "%(detail)s; Twilio does not have it": "запис не вдалося отримати: у Twilio його немає",
    "%(detail)s; kept at Twilio, not deleted":
        "запис не вдалося отримати; він залишився у Twilio і не видалений",
    "unreadable recording: %(detail)s; kept at Twilio, not deleted":
        "запис не читається; він залишився у Twilio і не видалений",
    "callback: gave up after %(attempts)s attempts":
        "зворотний дзвінок: спроби вичерпано (усього спроб: %(attempts)s)",
    "%(engine)s": "%(engine)s",
    "%(engine)s; spoken: %(spoken)s; chose %(chose)s":
        "%(engine)s; мова розмови: %(spoken)s; обрано в меню: %(chose)s",
    "callback: %(consent)s": "зворотний дзвінок: %(consent)s",
    "outside the caller's window (%(window)s)": "поза безпечним часом абонента (%(window)s)",
    "the caller's window closed before the bridge":
        "безпечний час абонента минув до з'єднання",
    "attempt %(attempt)s": "спроба %(attempt)s",
    "attempt %(attempt)s by operator %(operator)s": "спроба %(attempt)s, оператор: %(operator)s",
    "after %(attempts)s attempts": "усього спроб: %(attempts)s",
    "told: %(operators)s": "повідомлено: %(operators)s",
    "no supervisor to tell: nobody was told": "немає супервізора: нікому не повідомлено",
    "the SMS to %(operators)s could not be sent": "SMS не вдалося надіслати: %(operators)s",
    "filed from Twilio's list of recordings: no webhook reported it":
        "знайдено в списку записів Twilio: про нього не надійшло повідомлення",
    "operator %(operator)s": "оператор: %(operator)s",
    "operator %(operator)s %(name)s": "оператор: %(name)s",
    "operator %(operator)s: %(fields)s": "оператор: %(operator)s; змінено: %(fields)s",
    "operators %(operators)s": "оператори: %(operators)s",
    "operator %(operator)s: %(failures)s failed sign-ins within %(minutes)s minutes":
        "оператор: %(operator)s; невдалих спроб входу: %(failures)s за %(minutes)s хв",
    "operator %(operator)s: number change told to the old number":
        "оператор: %(operator)s; про зміну номера повідомлено на старий номер",
    "operator %(operator)s: password change told to the operator":
        "оператор: %(operator)s; про зміну пароля повідомлено операторові",
    "operator %(operator)s: second-factor change told to the operator":
        "оператор: %(operator)s; про скидання другого фактора повідомлено операторові",
    "no case #%(case)s": "справи #%(case)s немає",
    "case %(case)s is closed": "справа #%(case)s закрита",
    "case #%(case)s is already closed": "справа #%(case)s уже закрита",
    "case %(case)s: the caller did not agree to a callback":
        "справа #%(case)s: абонент не погодився на зворотний дзвінок",
    "case %(case)s: the caller's number was withheld": "справа #%(case)s: абонент приховав номер",
    "case %(case)s has no operator yet: take it or assign it first":
        "у справи #%(case)s ще немає оператора: спершу візьміть її собі або призначте комусь",
    "case %(case)s: a callback is ringing now": "справа #%(case)s: зворотний дзвінок уже триває",
    "case %(case)s: gave up after %(attempts)s attempts":
        "справа #%(case)s: спроби вичерпано (усього спроб: %(attempts)s)",
    "case %(case)s: outside the caller's safe hours (%(window)s); scheduled for %(later)s their time":
        "справа #%(case)s: зараз не безпечний час абонента (%(window)s); дзвінок заплановано на "
        "%(later)s за його часом",
    "case %(case)s: the call to your phone could not be placed: try again in a few minutes":
        "справа #%(case)s: не вдалося зателефонувати на ваш телефон; спробуйте ще раз за кілька "
        "хвилин",
    "unknown time zone %(zone)r (like Europe/Kyiv)":
        "невідомий часовий пояс %(zone)s (приклад: Europe/Kyiv)",
    "hours %(part)r: write them like `mon-fri 09:00-18:00; sat 10:00-14:00`":
        "години роботи %(part)s: пишіть їх так: mon-fri 09:00-18:00; sat 10:00-14:00",
    "hours %(part)r: not a time of day": "години роботи %(part)s: такого часу доби немає",
    "hours are empty: give them like `mon-fri 09:00-18:00`, or `always`":
        "години роботи порожні: напишіть, наприклад, mon-fri 09:00-18:00 або always",
    "%(what)s must be a comma-separated list like ru,uk": "%(what)s: перелік через кому, як-от ru,uk",
    "the operator's number must be in E.164 form, like +380441234567":
        "номер оператора має бути у форматі E.164, як-от +380441234567",
    "capacity must be from 1 to %(most)s open cases": "ліміт справ: від 1 до %(most)s відкритих справ",
    "the operator needs a name": "оператору потрібне ім'я",
    "there is already an operator named %(name)r": "оператор з ім'ям %(name)s уже є",
    "%(what)s must be one line of at most %(longest)s characters":
        "%(what)s: один рядок, не довше %(longest)s символів",
    "role must be one of %(roles)s": "роль має бути однією з таких: %(roles)s",
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
    # The probe flag (ivr/console/probe.py, ivr/probes.py)
    "This case is marked as a possible probe: a supervisor clears or confirms it first.":
        "Цю справу позначено як можливе зондування: спершу супервізор має зняти позначку або "
        "підтвердити її.",
    "This case was confirmed as a probe and is closed for good.":
        "Цю справу підтверджено як зондування, її закрито остаточно.",
    "Say why the call looks like a probe: the case was not marked.":
        "Напишіть, чому дзвінок схожий на зондування: справу не позначено.",
    "Marked as a possible probe: clear the flag or confirm it.":
        "Позначено як можливе зондування: зніміть позначку або підтвердьте її.",
    "Case #%(case)s was marked as a possible probe and went to the supervisors: it is no longer "
    "in your queue.":
        "Справу #%(case)s позначено як можливе зондування й передано супервізорам: у вашій черзі "
        "її більше немає.",
    "The flag is cleared: the case is back with the operators.":
        "Позначку знято: справа знову в операторів.",
    "Tick the box: the case will be closed for good. It was not closed.":
        "Поставте позначку: справу буде закрито остаточно. Справу не закрито.",
    "Confirmed as a probe: the case is closed.": "Зондування підтверджено: справу закрито.",
    "Possible probe? Say why (only supervisors will see the case and this reason)":
        "Можливе зондування? Напишіть чому (справу й пояснення бачитимуть лише супервізори)",
    "Mark as a possible probe": "Позначити як можливе зондування",
    "Marked as a possible probe: only supervisors see this case. No callbacks or SMS about it "
    "until a supervisor decides.":
        "Позначено як можливе зондування: цю справу бачать лише супервізори. Ні зворотних "
        "дзвінків, ні SMS щодо неї, доки супервізор не вирішить.",
    "Marked by": "Хто позначив",
    "Why": "Чому",
    "Not a probe: back to normal": "Не зондування: повернути до звичайної роботи",
    "The case goes back to its operator, or to another by the usual rule.":
        "Справа повернеться до свого оператора або за звичайним правилом до іншого.",
    "I understand: the case is closed as a probe and cannot be reopened; %(days)s days after "
    "closing its data is destroyed.":
        "Я розумію: справу буде закрито як зондування, відкрити її знову не можна; через "
        "%(days)s дн. після закриття її дані буде знищено.",
    "Confirm: it is a probe": "Підтвердити: це зондування",
    "Confirmed as a probe: the case is closed for good; %(days)s days after closing its data "
    "is destroyed.":
        "Зондування підтверджено: справу закрито остаточно; через %(days)s дн. після закриття "
        "її дані буде знищено.",
    "Same number as a flagged case": "Той самий номер, що й у позначеній справі",
    "Possible probes": "Можливі зондування",
    "possible probes": "можливі зондування",
    "possible probe": "можливе зондування",
    "confirmed probe": "підтверджене зондування",
    "marked as a possible probe": "позначено як можливе зондування",
    "probe flag cleared": "позначку зондування знято",
    "confirmed as a probe": "підтверджено як зондування",
    "marked as a possible probe: for supervisors only":
        "позначено як можливе зондування: лише для супервізорів",
    "the callbacks planned for it were cancelled": "заплановані зворотні дзвінки скасовано",
    "probe flag cleared: back to its operator": "позначку зондування знято: справа знову у свого оператора",
    "closed as a probe": "закрита як зондування",
    "case %(case)s is marked as a possible probe: supervisors decide":
        "справу #%(case)s позначено як можливе зондування: вирішують супервізори",
    "case #%(case)s is not marked as a possible probe":
        "справу #%(case)s не позначено як можливе зондування",
    "case #%(case)s was confirmed as a probe: it cannot be reopened":
        "справу #%(case)s підтверджено як зондування: відкрити її знову не можна",
    "say why the call looks like a probe": "напишіть, чому дзвінок схожий на зондування",
}

# Replies from the hotline (ivr/replies.py): the case page, its refusals, the timeline.
UK.update({
    "Replies to the caller": "Відповіді абонентові",
    "The caller speaks Russian: write in Russian.": "Абонент говорить російською: пишіть російською.",
    "The caller speaks Ukrainian: write in Ukrainian.": "Абонент говорить українською: пишіть українською.",
    "The caller speaks English: write in English.": "Абонент говорить англійською: пишіть англійською.",
    "The caller's language is not known: write in the language of their message.":
        "Мова абонента невідома: пишіть мовою його повідомлення.",
    "A synthetic voice reads it to the caller when they call with their case's code: plain "
    "words, at most %(most)s characters (about a minute of speech); emoji and symbols are not read.":
        "Синтезований голос прочитає її абонентові, коли той зателефонує з кодом своєї справи: "
        "простий текст, щонайбільше %(most)s символів (близько хвилини мовлення); емодзі та "
        "символи не читаються.",
    "Your reply": "Ваша відповідь",
    "Save reply": "Зберегти відповідь",
    "Reply saved: the caller hears it when they call with their code.":
        "Відповідь збережено: абонент почує її, коли зателефонує зі своїм кодом.",
    "not heard yet": "ще не прослухано",
    "heard %(when)s": "прослухано %(when)s",
    "first heard %(when)s; heard %(times)s": "уперше прослухано %(when)s; прослухано %(times)s",
    "No replies yet.": "Відповідей ще немає.",
    "the reply is empty: nothing was saved": "відповідь порожня: нічого не збережено",
    "the reply has %(length)s characters; at most %(most)s are read to the caller":
        "у відповіді символів: %(length)s; абонентові читають щонайбільше %(most)s",
    "case #%(case)s: its data was destroyed; no reply can be left":
        "справа #%(case)s: її дані знищено, відповідь залишити не можна",
    "case #%(case)s is marked as a possible probe: no reply goes to the caller":
        "справу #%(case)s позначено як можливе зондування: відповіді абонентові не надсилаються",
    "reply to the caller written": "відповідь абонентові написано",
    "the caller heard a reply": "абонент прослухав відповідь",
})

# The callers' languages named in the reader's own (the caller's path says which they chose).
LANGUAGE_NAMES = {
    "uk": {"ru": "російська", "uk": "українська", "en": "англійська"},
    "en": {"ru": "Russian", "uk": "Ukrainian", "en": "English"},
}

PLURALS = {"times": ("раз", "рази", "разів")}  # Ukrainian one, few, many}

MESSAGES = {"uk": UK, "en": {}}


def translate(locale: str, message: str) -> str:
    return MESSAGES.get(locale, {}).get(message, message)


def times(locale: str, n: int) -> str:
    """"9 разів", "2 рази", "1 раз"; "9 times", "once"."""
    if locale != "uk":
        return "once" if n == 1 else f"{n} times"
    one, few, many = PLURALS["times"]
    if n % 10 == 1 and n % 100 != 11:
        return f"{n} {one}"
    return f"{n} {few if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else many}"
