"""report.html in a real browser: headless Chromium loads the file with its filters in the address, the test reads
the DOM it built (`--dump-dom`), and a screenshot is saved as a CI artefact (`$POLYRISE_ARTEFACTS`, else the
test's tmp dir). Every host name resolves to nothing, so the page can only work from what it holds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_runs import NASTY, sample_run

from polyrise.reporting import write_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (install.sh installs it with apt)")


def _chromium(profile: Path, url: str, *args: str) -> str:
    """Chromium's stdout for `url` (headless, no network, its own profile dir); a failure shows its stderr."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _shown(dom: str, kind: str) -> tuple[str, list[str]]:
    """The count line of a list (`pairs`, `evals`) and the ids of its rows as the page shows them."""
    [count] = re.findall(rf'<p id="{kind}-count"[^>]*>([^<]*)</p>', dom)
    if kind == "pairs":
        [block] = re.findall(r'<div id="pairs">(.*?)</div>\s*<button id="pairs-more"', dom, re.S)
        return count, re.findall(r"<span>id ([^<]*)</span>", block)
    [body] = re.findall(r'<table id="evals">.*?<tbody>(.*?)</tbody>', dom, re.S)
    rows = re.findall(r"<tr [^>]*>(.*?)</tr>", body, re.S)
    return count, ["/".join(re.findall(r'<td class="c-(?:model|lang)">([^<]*)</td>', row)) for row in rows]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = sample_run(tmp_path_factory.mktemp("browser"))
    page = write_report(run)[1]
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page.read_text()) is None  # nothing to fetch
    return page


def test_filters_in_the_address_filter_the_rows(report, tmp_path):
    dom = _chromium(tmp_path / "profile", f"{report.as_uri()}#lang=es&status=kept&verdict=right", "--dump-dom")
    assert _shown(dom, "pairs") == ("2 of 6 pairs match", ["g1", "g4"])  # es pairs kept, in both iterations
    assert _shown(dom, "evals") == ("2 of 8 evaluation rows match", ["M1/es", "M2/es"])  # es rows judged right
    # g4's chosen answer, holding `</script>` and markup, is shown as text, and its script never ran
    escaped = NASTY.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<pre class="text">{escaped}</pre>' in dom and "<b>bold</b>" not in dom
    assert "<title>polyrise report: run</title>" in dom
    # the search box: a substring of an output, in any case, with the iteration; a link with filters opens the pairs
    dom = _chromium(tmp_path / "profile", f"{report.as_uri()}#q=CANBERRA&iter=0", "--dump-dom")
    assert _shown(dom, "pairs") == ("0 of 6 pairs match", [])
    assert _shown(dom, "evals") == ("2 of 8 evaluation rows match", ["M0/es", "M1/es"])
    assert 'id="tab-pairs" class="tab"' in dom and 'id="tab-scores" class="tab" hidden' in dom


def test_screenshot_is_saved_as_an_artefact(report, tmp_path):
    out = Path(os.environ.get("POLYRISE_ARTEFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "report.png"
    shot.unlink(missing_ok=True)
    _chromium(
        tmp_path / "profile",
        f"{report.as_uri()}#tab=pairs",
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        "--hide-scrollbars",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


IMG = '"><img src=x onerror="document.body.dataset.pwned=\'img\'">'
"""A name that, unescaped in an attribute or element, adds an image whose error handler runs."""
SCRIPT = "</script><script>document.body.dataset.pwned='script'</script>"
"""A text that, unescaped, closes a script block or opens one."""
OPEN_SCRIPT = SCRIPT.removeprefix("</script>").removesuffix("</script>")
"""A name that, unescaped, opens a script block, and is one path component (a scores.json key names a file)."""


def test_hostile_names_show_as_text_and_run_nothing(tmp_path):
    """An evaluation name (a scores.json key, `--name`, `evaluation[].name`), a model label, a language code and
    the texts of pairs and rows reach the page only as text: no element they spell is built, no script they hold
    runs (the page sets no `data-pwned`, keeps its title), and each shows literally."""
    from polyrise.evaluation.choice import ChoicePrediction
    from polyrise.io import write_jsonl

    run = sample_run(tmp_path)  # its pairs and rows hold NASTY (`</script><script>document.title='pwned'...`)
    task, label, lang = f"{IMG}task", f"M1{IMG}", f"{IMG}lang"
    cells = {"accuracy": 0.5, "accuracy_ci_low": 0.0, "accuracy_ci_high": 1.0, "n": 1}
    scores = {
        task: {"M0": {"en": cells, lang: cells}, label: {"en": cells, lang: cells}},
        f"{OPEN_SCRIPT}task": {"M0": {SCRIPT: cells}},
    }
    (run / "scores.json").write_text(json.dumps(scores))
    write_jsonl(run / f"{task}_M0.jsonl", [ChoicePrediction(id=IMG, lang=lang, pred=0, label=0, logliks=[0.0])])
    page = write_report(run)[1]
    text = page.read_text()
    [policy] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    assert "unsafe-inline" not in policy and "script-src 'sha256-" in policy
    for view in ("scores", "evals", "pairs"):
        dom = _chromium(tmp_path / "profile", f"{page.as_uri()}#tab={view}", "--dump-dom")
        assert "<title>polyrise report: run</title>" in dom and "data-pwned" not in dom
        assert '<img src="x"' not in dom and "<script>document" not in dom
        if view == "scores":  # the names in headings, column and row headers, as text
            for name in (task, label, lang, f"{OPEN_SCRIPT}task", SCRIPT):
                assert text_of(name) in dom, name
        if view == "evals":  # the row of the hostile task: its model, task, language and id
            assert _shown(dom, "evals")[0] == "9 of 9 evaluation rows match"
            assert f'<td class="c-task">{text_of(task)}</td>' in dom
            assert f'<td class="c-lang">{text_of(lang)}</td>' in dom
    assert f'<pre class="text">{text_of(NASTY)}</pre>' in dom  # the pairs tab: g4's chosen answer


def text_of(name: str) -> str:
    """`name` as Chromium serialises a text node holding it."""
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
