"""The caller's intake answers in the console, in a real browser (the fixtures of
tests/test_console_browser.py: Debian's Chromium, the app over HTTP, SQLite): short tags in the
queue in the reader's language, the urgent case first, the filter by an answer, the case page's
section, and the JSON of /console/api/cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ivr.storage import Case
from ivr.voicemail import seal_intake
from tests.conftest import ROOT, TEST_FLOWS
from tests.test_console_browser import Site, Tab, sign_in, site, tab  # noqa: F401


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    """The shipped hotline (its `fields:` give the labels), not the small test flow."""
    target = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", target, ignore=shutil.ignore_patterns("tests"))
    assert (TEST_FLOWS / "mini.yaml").is_file()  # (what the other console tests use instead)
    return target


def answer(where: Site, region: str, answers: dict[str, str], urgent: bool) -> int:
    """What the flow keeps when the caller answers: sealed answers, and `urgent` in clear."""
    case_id = where.cases[region]
    with where.db.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        seal_intake(where.vault, case, answers)
        case.urgent = urgent
    return case_id


def test_the_queue_shows_answers_as_tags_urgent_first_and_filters_by_them(tab: Tab) -> None:  # noqa: F811
    # The Crimean case is the older: without its urgent answer the other would come first.
    front = answer(tab.site, "crimea", {"who": "front", "company": "with_others", "people": "3"}, True)
    relative = answer(tab.site, "occupied", {"who": "relative"}, False)
    sign_in(tab, "sofia")  # a supervisor: both regions
    page = tab.page
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("a").inner_text() == f"#{front}"
    assert "urgent" in (rows.nth(0).get_attribute("class") or "")
    assert rows.nth(0).locator(".tag").all_inner_texts() == ["На фронті", "З іншими", "Скільки людей: 3"]
    assert rows.nth(0).locator(".tag.urgent").all_inner_texts() == ["На фронті"]
    assert rows.nth(1).locator(".tag").all_inner_texts() == ["Родич або друг"]
    assert page.locator("th", has_text="Відповіді абонента").count() == 1
    tab.shot("intake-queue")

    # The filter: its choices are the flow's labels, grouped by question.
    choice = page.locator("select[name=intake]")
    assert choice.locator("optgroup").evaluate_all("gs => gs.map(g => g.label)") == [
        "Хто телефонує", "Сам чи з іншими"]
    choice.select_option("who=relative")
    page.locator("form.filters button[type=submit]").click()
    page.wait_for_url("**intake=who%3Drelative**")
    assert [a.inner_text() for a in page.locator("table.queue tbody tr a").all()] == [f"#{relative}"]
    assert page.locator("select[name=intake]").input_value() == "who=relative"
    assert "1000 найновіших справ" in page.locator("main").inner_text()
    tab.shot("intake-filter")

    # The same in the JSON the console's tools read.
    listed = page.request.get("/console/api/cases?intake=who%3Dfront").json()
    assert [(c["id"], c["intake"], c["urgent"]) for c in listed] == [
        (front, {"who": "front", "company": "with_others", "people": "3"}, True)]

    # The case page: the questions and answers in the reader's language.
    page.goto(f"/console/cases/{front}")
    facts = page.locator("#intake")
    assert facts.locator("dt").all_inner_texts() == ["Хто телефонує", "Сам чи з іншими", "Скільки людей"]
    assert facts.locator("dd").all_inner_texts() == ["На фронті", "З іншими", "3"]
    assert "Термінова" in page.locator("main").inner_text()
    tab.shot("intake-case")
