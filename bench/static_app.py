"""The baseline for bench/webhooks.py: Flask answering every request with fixed TwiML.

No signature check, no form parsing, no flow: what the framework and the server cost on
their own. `gunicorn -c python:ivr.serving ... 'bench.static_app:app'` (from the repo root).
"""

from __future__ import annotations

from flask import Flask, Response

# A language menu as the real app renders one: about 600 bytes of TwiML.
TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    '<Say language="ru-RU" voice="Polly.Tatyana">Здравствуйте</Say>'
    '<Gather action="https://hotline.example.org/twilio/step?s=WyJob3RsaW5lIiwiMGQ4YjVmN2'
    'E5YyIsImxhbmciLCJydSIsMCxbXV0&amp;e=input" actionOnEmptyResult="false" '
    'finishOnKey="#" input="dtmf speech" language="ru-RU" method="POST" numDigits="1" '
    'timeout="5" speechTimeout="auto"><Say language="ru-RU" voice="Polly.Tatyana">'
    "Русский 1, українська 2, English 3</Say></Gather>"
    '<Redirect method="POST">https://hotline.example.org/twilio/step?s=WyJob3RsaW5lIiwiMG'
    "Q4YjVmN2E5YyIsImxhbmciLCJydSIsMCxbXV0&amp;e=timeout</Redirect></Response>"
)

app = Flask(__name__)


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def answer(path: str) -> Response:
    return Response(TWIML, mimetype="text/xml")
