"""The /twilio/* blueprint: Twilio's webhooks, checked and handed to the call handler.

Thin on purpose: it checks the signature, parses the form and returns the handler's TwiML.
The URL it checks is PUBLIC_BASE_URL + path + the raw query string, never `request.url`,
which says http:// and an internal host behind a TLS proxy (twilio-python issue 751).
"""

from __future__ import annotations

import logging
import re
from typing import NoReturn
from urllib.parse import unquote, unquote_plus

from flask import Blueprint, Response, abort, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ivr.calls import CallbackHandler, CallHandler, Reply

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")
METHODS = ["POST", "GET"]


def handler() -> CallHandler:
    found: CallHandler = current_app.extensions["ivr"]
    return found


def parse_form(body: str) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded, as Twilio posts it.

    What werkzeug's form parsing does for this one content type, in a quarter of the time
    (it was the largest cost of a webhook, see bench/webhooks.py --profile).
    """
    form: dict[str, list[str]] = {}
    for pair in body.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        form.setdefault(name, []).append(value)
    return form


def params() -> dict[str, str]:
    """Twilio's parameters, first value of each: the body of a POST, the query of a GET."""
    found: dict[str, str] = g.twilio_params
    return found


FORM = "application/x-www-form-urlencoded"


def raw_path() -> str | None:
    """The path exactly as the client sent it (gunicorn: RAW_URI; others: REQUEST_URI)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return None
    path = str(raw).split("?", 1)[0]
    if "://" in path:  # an absolute-form request line: keep the path only
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return path


@bp.before_request
def check_signature() -> None:
    """Only Twilio's own requests pass: form-encoded, a plain path, a valid signature.

    The signed URL is built from the decoded path, so a path with escapes (`%2F`, `%74`)
    that decodes to ours could carry a signature made for another URL: refused. Twilio posts
    form-encoded bodies only; a JSON or multipart body is refused before it is parsed.
    """
    h = handler()
    raw = raw_path()
    if raw is not None and raw != unquote(raw):
        refuse("the raw path differs from its decoded form")
    if request.method == "POST" and request.mimetype != FORM and (
            request.mimetype or request.content_length):  # (an empty POST holds nothing)
        refuse(f"Content-Type {SAFE_TYPE.sub('?', request.mimetype or 'none')[:60]} is not {FORM}")
    query = request.environ.get("QUERY_STRING", "")
    url = h.settings.public_base_url + request.path + (f"?{query}" if query else "")
    if request.method != "POST":
        form: dict[str, list[str]] = {}
        g.twilio_params = request.args.to_dict()
    else:
        form = parse_form(request.get_data(as_text=True))
        g.twilio_params = {name: values[0] for name, values in form.items()}
    signature = request.headers.get("X-Twilio-Signature", "")
    settings = request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
    why = h.checker.refusal(url, form, signature, settings)
    if why is not None:
        refuse(why)


SAFE_TYPE = re.compile(r"[^A-Za-z0-9/+._-]")


def refuse(why: str) -> NoReturn:
    """403, and one log line saying why: the method and path, never a parameter."""
    log.warning("rejected %s %s: %s", request.method, request.path[:100], why)
    abort(403)


def twiml(reply: Reply) -> Response:
    response = Response(reply.twiml, mimetype="text/xml")
    if reply.trace:
        response.headers["X-IVR-Steps"] = ",".join(reply.trace)
    return response


@bp.route("/voice", methods=METHODS)
def voice() -> Response:
    return twiml(handler().incoming(params()))


@bp.route("/step", methods=METHODS)
def step() -> Response:
    return twiml(handler().step(request.args.to_dict(), params()))


@bp.route("/status", methods=METHODS)
def status() -> Response:
    return twiml(handler().status(params()))


@bp.route("/fallback", methods=METHODS)
def fallback() -> Response:
    return twiml(handler().fallback(params()))


@bp.route("/recording", methods=METHODS)
def recording() -> Response:
    return twiml(handler().recording(request.args.to_dict(), params()))


def callbacks() -> CallbackHandler:
    found: CallbackHandler = current_app.extensions["ivr.callbacks"]
    return found


@bp.route("/callback/answer", methods=METHODS)
def callback_answer() -> Response:
    """The operator picked up a callback: the whisper."""
    return twiml(callbacks().answer(request.args.to_dict(), params()))


@bp.route("/callback/connect", methods=METHODS)
def callback_connect() -> Response:
    """The operator's key after the whisper: 1 bridges to the caller."""
    return twiml(callbacks().connect(request.args.to_dict(), params()))


@bp.route("/callback/callee", methods=METHODS)
def callback_callee() -> Response:
    """The caller's phone answered a callback's <Dial>: the key that allows the bridge."""
    return twiml(callbacks().callee(request.args.to_dict(), params()))


@bp.route("/callback/bridged", methods=METHODS)
def callback_bridged() -> Response:
    """The <Dial> to the caller ended: its outcome."""
    return twiml(callbacks().bridged(request.args.to_dict(), params()))


@bp.route("/callback/status", methods=METHODS)
def callback_status() -> Response:
    """The operator's leg: busy, no answer, completed."""
    return twiml(callbacks().status(request.args.to_dict(), params()))


@bp.errorhandler(Exception)
def apologise(exc: Exception) -> WerkzeugResponse:
    """Last line of defence: even our own bug in this blueprint gives the caller TwiML."""
    if isinstance(exc, HTTPException):
        return exc.get_response()
    log.exception("unexpected error in %s; answered with the apology", request.path)
    return twiml(Reply(handler().renderer.apology("ru", None)))
