"""The /twilio/* blueprint: Twilio's webhooks, checked and handed to the call handler.

Thin on purpose: it checks the signature, parses the form and returns the handler's TwiML.
The URL it checks is PUBLIC_BASE_URL + path + the raw query string, never `request.url`,
which says http:// and an internal host behind a TLS proxy (twilio-python issue 751).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ivr.calls import CallHandler, Reply

log = logging.getLogger(__name__)
bp = Blueprint("twilio", __name__, url_prefix="/twilio")
METHODS = ["POST", "GET"]


def handler() -> CallHandler:
    found: CallHandler = current_app.extensions["ivr"]
    return found


def params() -> dict[str, str]:
    return request.form.to_dict() if request.method == "POST" else request.args.to_dict()


@bp.before_request
def check_signature() -> None:
    h = handler()
    query = request.environ.get("QUERY_STRING", "")
    url = h.settings.public_base_url + request.path + (f"?{query}" if query else "")
    form = request.form.to_dict(flat=False) if request.method == "POST" else {}
    signature = request.headers.get("X-Twilio-Signature", "")
    settings = request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
    if not h.checker.valid(url, form, signature, settings):
        log.warning("rejected %s %s: %s signature", request.method, request.path,
                    "forged or mismatched" if signature else "missing")
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


@bp.errorhandler(Exception)
def apologise(exc: Exception) -> WerkzeugResponse:
    """Last line of defence: even our own bug in this blueprint gives the caller TwiML."""
    if isinstance(exc, HTTPException):
        return exc.get_response()
    log.exception("unexpected error in %s; answered with the apology", request.path)
    return twiml(Reply(handler().renderer.apology("ru", None)))
