"""What a flow may be: every limit in one place.

Each is refused by the loader (and so by `ivr flows check` and by the running service) with
its own `file:line:col: message (hint)` line; the README's "Limits" table explains them and
flows/schema.json repeats the ones JSON Schema can express. They keep any file, even one
made to hurt, to well under a second of reading and a bounded amount of memory.
"""

from __future__ import annotations

MAX_FILE_BYTES = 1_000_000  # a flow (or regions, or scenario) file; stat() before reading
MAX_STEPS = 500  # steps in one flow: join flows with `goto` for more
# How deep lists and mappings may nest. A flow needs 8 levels at most; PyYAML's composer
# recurses per level, so 100,000 `[` would otherwise end in RecursionError.
MAX_DEPTH = 20
# How many values a file may hold (the largest useful flow has about 20,000), each `*alias`
# counted as a copy of what it names, so a few aliases cannot make the reader walk millions
# of values ("billion laughs").
MAX_VALUES = 50_000
MAX_PROBLEMS = 100  # problems listed per file (the rest are counted): a log line each, per reload
MAX_PROMPT_CHARS = 4_000  # one language's words of one prompt
MAX_FIELDS = 20  # fields a flow keeps on the case (`fields:`): each is a column of the queue
MAX_FIELD_VALUES = 20  # values of one field: each is a key of a menu and a filter choice
MAX_FIELD_NUMBER = 9999  # a number field's largest `max`: four keys on the keypad
MAX_VARIABLE_CHARS = 100  # a `set` value: it travels in every action URL of the call
# The most steps one answer to Twilio may walk: the engine stops a call that goes further
# without waiting for the caller, and the loader refuses a flow where that can happen.
MAX_AUTOMATIC_STEPS = 64
MAX_TWIML_BYTES = 64_000  # Twilio refuses a TwiML answer over 64 kB
# What the estimate of an answer's size adds to the words: each <Say>/<Play> tag with its
# voice, language or URL (a PUBLIC_BASE_URL up to 200 characters), and the rest of the
# document (<Gather>/<Record>/<Dial> with their action URLs) without the call state.
UTTERANCE_BYTES = 300
ANSWER_BYTES = 2_000
