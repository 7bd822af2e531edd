"""Replies from the hotline, below the console: sealed under the case's key, audited, read
to the caller newest first and marked heard, refused when empty, too long or too late,
destroyed by the purge, spoken by <Say> in the caller's voice whatever characters they hold,
and `ivr cases reply` / `ivr cases show` at the terminal."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text, update

from ivr.casebook import close_case, list_cases, show_case
from ivr.cli import main as cli
from ivr.engine import Caller, CallState, End, Turn
from ivr.flow import VOICES
from ivr.operators import add_operator
from ivr.replies import MAX_LENGTH, ReplyError, add_reply, mark_heard, replies_for_caller, spoken
from ivr.storage import AuditEntry, Case, Database, Reply, Vault, upgrade, utcnow
from ivr.twiml import APOLOGY_VOICES, Renderer
from ivr.voicemail import Reported, note_recording, purge
from tests.conftest import SUNDAY, TEST_KEYS, TOKEN
from tests.test_storage import keyring

WORDS = "Мы получили ваше сообщение. Оператор перезвонит завтра после 10 утра."
TRICKY = 'Он сказал: "Я <не> знаю" & «ушёл» — it\'s 5 > 3.\nНовая строка\n\n🙂👍🏽 конец'


@dataclass
class Stores:
    db: Database
    vault: Vault
    url: str
    case: int


@pytest.fixture
def stores(database_url: str, keystore_url: str, tmp_path: Path) -> Iterator[Stores]:
    """A case, on SQLite and on PostgreSQL."""
    yield from _stores(database_url, keystore_url, tmp_path)


@pytest.fixture
def sqlite_stores(tmp_path: Path) -> Iterator[Stores]:
    """A case in the SQLite files that `ivr` itself opens."""
    yield from _stores(f"sqlite:///{tmp_path / 'ivr.db'}", f"sqlite:///{tmp_path / 'keys.db'}", tmp_path)


def _stores(database_url: str, keystore_url: str, tmp_path: Path) -> Iterator[Stores]:
    upgrade(database_url, keystore_url)
    db, keys = Database(database_url), Database(keystore_url)
    vault = Vault(keyring(TEST_KEYS), keys, tmp_path / "epochs")
    note_recording(db, vault, Reported(
        call_sid="CA" + "a" * 32, recording_sid="RE" + "a" * 32, status="completed", duration=20,
        number="+79781234567", caller=Caller(False, "UA", "crimea"), flow="hotline", step="voicemail",
        language="ru"))
    with db.session() as s:
        case_id = s.scalars(select(Case.id)).one()
    yield Stores(db, vault, database_url, case_id)
    db.engine.dispose()
    keys.engine.dispose()


def test_a_reply_is_sealed_audited_and_shown_only_in_show(stores: Stores, tmp_path: Path) -> None:
    db, vault, case = stores.db, stores.vault, stores.case
    reply_id = add_reply(db, vault, case, f"  {WORDS}  \n", actor="cli:olena", now=SUNDAY)
    with db.session() as s:
        raw = s.execute(text("SELECT text FROM replies WHERE id = :id"), {"id": reply_id}).scalar_one()
        row = s.get(Reply, reply_id)
        assert row is not None and row.actor == "cli:olena" and row.heard_at is None
        audit = s.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.detail)
                          .where(AuditEntry.case_id == case, AuditEntry.action == "reply-written")).all()
    # At rest: neither the words nor a piece of them, in the row or anywhere in the file.
    assert WORDS.encode() not in bytes(raw) and "Оператор".encode() not in bytes(raw)
    if stores.url.startswith("sqlite"):
        db.engine.dispose()
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("ivr.db*"))
        assert "Оператор перезвонит".encode() not in blob
    assert audit == [("cli:olena", "reply-written", None)]  # who wrote one, never what
    found = show_case(db, vault, case, actor="cli:admin")
    assert found is not None
    assert found["replies"] == [{"id": reply_id, "at": SUNDAY.isoformat(), "actor": "cli:olena",
                                 "author": "cli:olena", "heard_at": None, "heard_count": 0,
                                 "text": WORDS}]  # trimmed
    (listed,) = list_cases(db, vault=vault)
    assert "replies" not in listed and WORDS not in json.dumps(listed, ensure_ascii=False)


def test_the_caller_is_read_the_newest_first_and_each_is_marked_heard(stores: Stores) -> None:
    db, vault, case = stores.db, stores.vault, stores.case
    first = add_reply(db, vault, case, "первый", actor="cli:root", now=SUNDAY)
    second = add_reply(db, vault, case, "второй", actor="cli:root", now=SUNDAY + timedelta(hours=1))
    assert [(r.id, r.text) for r in replies_for_caller(db, vault, case)] == [(second, "второй"),
                                                                              (first, "первый")]
    mark_heard(db, second, SUNDAY + timedelta(hours=2))
    mark_heard(db, second, SUNDAY + timedelta(hours=3))  # heard again: the first time stays
    found = show_case(db, vault, case, actor="cli:root")
    assert found is not None
    heard = {r["id"]: (r["heard_at"], r["heard_count"]) for r in found["replies"]}
    assert heard == {first: (None, 0), second: ((SUNDAY + timedelta(hours=2)).isoformat(), 2)}
    assert [e["action"] for e in found["timeline"]].count("reply-heard") == 2
    assert {e["actor"] for e in found["timeline"] if e["action"] == "reply-heard"} == {"caller"}


def test_a_reply_by_the_cases_operator_is_acting_on_it_and_names_her(stores: Stores) -> None:
    db, vault, case = stores.db, stores.vault, stores.case
    olena = add_operator(db, vault, name="olena", number="+380501110000", languages="ru",
                         regions="crimea", timezone="Europe/Kyiv", hours="always")
    with db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        found.operator_id, found.acted_at = olena, None
    add_reply(db, vault, case, WORDS, actor=f"operator:{olena}", operator_id=olena, now=SUNDAY)
    with db.session() as s:
        found = s.get(Case, case)
        assert found is not None and found.acted_at == SUNDAY  # no re-offer to someone else
    shown = show_case(db, vault, case, actor="cli:root")
    assert shown is not None and shown["replies"][0]["author"] == "olena"


@pytest.mark.parametrize(("written", "code"), [
    ("", "reply-empty"),
    (" \n\t \x00 ", "reply-empty"),
    ("а" * (MAX_LENGTH + 1), "reply-too-long"),
])
def test_an_empty_or_too_long_reply_is_refused(stores: Stores, written: str, code: str) -> None:
    with pytest.raises(ReplyError) as refused:
        add_reply(stores.db, stores.vault, stores.case, written, actor="cli:root")
    assert refused.value.said.code == code
    with stores.db.session() as s:
        assert s.scalars(select(Reply)).all() == []
    add_reply(stores.db, stores.vault, stores.case, "а" * MAX_LENGTH, actor="cli:root")  # the most


def test_a_closed_case_takes_a_reply_until_its_data_is_destroyed(stores: Stores) -> None:
    db, vault, case = stores.db, stores.vault, stores.case
    before = add_reply(db, vault, case, WORDS, actor="cli:root")
    close_case(db, case, "cli:root", "helped")
    after = add_reply(db, vault, case, "Мы закрыли дело, но вы можете позвонить снова.", actor="cli:root")
    assert [r.id for r in replies_for_caller(db, vault, case)] == [after, before]
    assert purge(db, vault, timedelta(0)) == 1
    with db.session() as s:
        assert [r.text for r in s.scalars(select(Reply))] == [None, None]  # the words are gone
        assert all(r.created_at.hour == 0 for r in s.scalars(select(Reply)))  # the time, to the day
    assert replies_for_caller(db, vault, case) == []
    found = show_case(db, vault, case, actor="cli:root")
    assert found is not None and [r["text"] for r in found["replies"]] == [None, None]
    with pytest.raises(ReplyError) as refused:
        add_reply(db, vault, case, WORDS, actor="cli:root")
    assert refused.value.said.code == "reply-data-destroyed"
    assert "its data was destroyed" in str(refused.value)
    with pytest.raises(ReplyError, match="no case #999"):
        add_reply(db, vault, 999, WORDS, actor="cli:root")


def test_a_key_destroyed_by_a_purge_under_way_refuses_and_reads_nothing(stores: Stores) -> None:
    db, vault, case = stores.db, stores.vault, stores.case
    add_reply(db, vault, case, WORDS, actor="cli:root")
    with db.session() as s:
        found = s.get(Case, case)
        assert found is not None
        vault.shred([found.data_key_id])  # the purge destroys the keys first
    assert replies_for_caller(db, vault, case) == []
    with pytest.raises(ReplyError):
        add_reply(db, vault, case, WORDS, actor="cli:root")


# --- read aloud: <Say> in the caller's voice ----------------------------------------------------


@pytest.mark.parametrize("language", ["ru", "uk", "en"])
def test_a_reply_with_any_characters_is_valid_twiml_in_the_callers_voice(language: str) -> None:
    voice, locale = APOLOGY_VOICES[language]
    assert VOICES[voice] == locale  # a voice that speaks this language (Twilio rejects others)
    said = spoken(TRICKY, voice, locale)
    renderer = Renderer("https://hotline.example.org", "+15005550006")
    state = CallState("hotline", "1", "replies", language, 0, ())
    doc = ET.fromstring(renderer.render(Turn(say=(said,), wait=End(), state=state)))
    (say,) = doc.findall("Say")
    assert (say.get("voice"), say.get("language")) == (voice, locale)
    assert say.text == ('Он сказал: "Я <не> знаю" & «ушёл» — it\'s 5 > 3. Новая строка. конец.')


def test_the_longest_reply_fits_every_voices_limit() -> None:
    # Twilio's <Say> limits in UTF-8 bytes: Polly 3,000, Basic 4,096, Google 5,000; Cyrillic
    # takes two bytes a letter, and emoji (four) are not spoken.
    longest = spoken("ж" * MAX_LENGTH, "Polly.Tatyana", "ru-RU").text
    assert len(longest.encode()) <= 3000


# --- the terminal ------------------------------------------------------------------------------


def test_ivr_cases_reply_and_show(sqlite_stores: Stores, tmp_path: Path) -> None:
    stores = sqlite_stores
    env = {"DATABASE_URL": stores.url, "KEYSTORE_URL": f"sqlite:///{tmp_path / 'keys.db'}",
           "IVR_DATA_KEYS": TEST_KEYS, "INSTANCE_DIR": str(tmp_path / "instance"),
           "KEY_EPOCH_DIR": str(tmp_path / "epochs"), "IVR_DOTENV": "/nonexistent",
           "TWILIO_AUTH_TOKEN": TOKEN}
    runner = CliRunner()
    case = str(stores.case)
    done = runner.invoke(cli, ["cases", "reply", case, "--text", "Перезвоните нам\nзавтра"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.startswith("reply #1 saved on case #1: the caller hears it")
    with stores.db.session() as s:
        actors = s.scalars(select(AuditEntry.actor).where(AuditEntry.action == "reply-written")).all()
    assert len(actors) == 1 and actors[0].startswith("cli:")  # the OS account, as other commands
    empty = runner.invoke(cli, ["cases", "reply", case, "--text", "   "], env=env)
    assert empty.exit_code == 1 and "Error: the reply is empty: nothing was saved" in empty.output
    long = runner.invoke(cli, ["cases", "reply", case, "--text", "a" * 1001], env=env)
    assert "the reply has 1001 characters; at most 1000 are read to the caller" in long.output
    missing = runner.invoke(cli, ["cases", "reply", "99", "--text", "x"], env=env)
    assert missing.exit_code == 1 and "no case #99" in missing.output
    mark_heard(stores.db, 1, SUNDAY)
    shown = runner.invoke(cli, ["cases", "show", case], env=env)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    at = lines.index(next(line for line in lines if line.strip() == "replies:"))
    assert lines[at + 1].strip().startswith("#1 ") and lines[at + 1].endswith(f"heard {SUNDAY.isoformat()}")
    assert [line.strip() for line in lines[at + 2:at + 4]] == ["Перезвоните нам", "завтра"]
    as_json = json.loads(runner.invoke(cli, ["cases", "show", case, "--json"], env=env).output)
    (reply,) = as_json["replies"]
    assert reply["text"] == "Перезвоните нам\nзавтра" and reply["heard_count"] == 1
    listed = runner.invoke(cli, ["cases", "list", "--json"], env=env).output
    assert "Перезвоните" not in listed and '"replies"' not in listed
    with stores.db.session() as s:
        s.execute(update(Case).values(status="closed", closed_at=utcnow() - timedelta(days=60)))
    assert purge(stores.db, stores.vault, timedelta(days=30)) == 1
    late = runner.invoke(cli, ["cases", "reply", case, "--text", "x"], env=env)
    assert late.exit_code == 1 and "its data was destroyed; no reply can be left" in late.output


def test_no_reply_goes_to_a_possible_probe_until_a_supervisor_clears_it(stores: Stores) -> None:
    from ivr.probes import clear_flag, flag_case

    flag_case(stores.db, stores.vault, stores.case, "operator:1", "asks where the unit stands")
    with pytest.raises(ReplyError) as refused:
        add_reply(stores.db, stores.vault, stores.case, WORDS, actor="cli:root")
    assert refused.value.said.code == "reply-flagged"
    with stores.db.session() as s:
        assert s.scalars(select(Reply)).all() == []
    clear_flag(stores.db, stores.case, "operator:3")
    add_reply(stores.db, stores.vault, stores.case, WORDS, actor="cli:root")
    assert [r.text for r in replies_for_caller(stores.db, stores.vault, stores.case)] == [WORDS]
