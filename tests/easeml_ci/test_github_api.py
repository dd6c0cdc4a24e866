"""The GitHub REST client, the runner protocols, the report's secrecy and the harness resolver."""
from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from action_harness import evaluate, resolve
from easeml_ci.github import workflow
from easeml_ci.github.alert_issue import upsert_alert_issue
from easeml_ci.github.api import (
    GitHubAmbiguous,
    GitHubClient,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    GitHubRateLimited,
)
from easeml_ci.github.comment import marker, scope_key, upsert_comment
from easeml_ci.http import DEFAULT_MAX_WAIT, GitHubRetry
from easeml_ci.github.report import GateReport, render_comment, render_summary, steps_chart
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

REPO = "acme/models"


@pytest.fixture
def gh(fake_github):
    fake_github.add_repo(REPO)
    fake_github.add_pull_request(REPO, 1)
    fake_github.add_token("tok")
    fake_github.add_token("pat", login="alice", installation=False)
    fake_github.add_token("ro", permission="read")
    return fake_github


def client(gh, token="tok", **kw):
    slept = []
    kw.setdefault("sleep", slept.append)
    c = GitHubClient(token, gh.url, clock=lambda: 1000.0, **kw)
    return c, slept


# --- retries: the one HTTP policy against the fake API ------------------------------------------
# Every wait goes through the client's injectable sleep; the clock is pinned at t=1000.

def test_5xx_on_a_get_is_retried_with_urllib3s_backoff(gh):
    c, slept = client(gh)
    gh.fail_next("GET", r"^/repos/acme/models$", 502, times=2)
    assert c.get(f"repos/{REPO}")["default_branch"] == "main"
    assert slept == [2.0]  # urllib3's backoff: none before the first retry, then factor * 2**(n-1)
    assert [r.status for r in gh.calls("GET", "models$")] == [502, 502, 200]


def test_gives_up_after_the_configured_attempts(gh):
    c, slept = client(gh, policy=GitHubRetry(2, backoff_factor=0.5, sleep=lambda s: None))
    gh.fail_next("GET", r"models$", 503, times=5)
    with pytest.raises(GitHubError) as info:
        c.get(f"repos/{REPO}")
    assert info.value.status == 503 and len(gh.calls("GET", "models$")) == 3


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_without_retry_after_waits_a_minute_then_two(gh, status):
    c, slept = client(gh)
    gh.rate_limit_next("POST", r"/comments$", "secondary", status=status, times=2)
    got = c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert got["body"] == "hi" and slept == [60.0, 120.0]
    assert len(gh.comments_on(REPO, 1)) == 1  # refused twice, performed once


def test_secondary_rate_limit_with_a_short_retry_after_still_waits_a_minute(gh):
    c, slept = client(gh)
    gh.rate_limit_next("POST", r"/comments$", "secondary", retry_after=7)
    c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert slept == [60.0]


def test_retry_after_is_honoured(gh):
    c, slept = client(gh)
    gh.fail_next("GET", r"models$", 429, headers={"retry-after": "90"}, message="slow down")
    c.get(f"repos/{REPO}")
    assert slept == [90.0]


def test_primary_rate_limit_waits_until_the_reset(gh):
    c, slept = client(gh)  # the clock says 1000
    gh.rate_limit_next("PUT", r"/contents/", "primary", reset=1030)
    c.put(f"repos/{REPO}/contents/x.txt", {"message": "m", "content": "eA==", "branch": "main"})
    assert slept == [31.0]
    assert gh.file_on_branch(REPO, "main", "x.txt") == b"x"


def test_a_rate_limit_beyond_the_bound_is_given_up_at_once_and_is_not_a_permission(gh):
    c, slept = client(gh)
    gh.rate_limit_next("GET", r"models$", "primary", reset=1000 + 3600)  # an hour away
    with pytest.raises(GitHubRateLimited) as info:
        c.get(f"repos/{REPO}")
    assert not isinstance(info.value, GitHubForbidden)
    assert info.value.kind == "primary" and info.value.retry_in == 3601.0 and slept == []
    # secondary limits that do not lift: 60 + 120 s waited, the next 240 s would pass 300 s
    gh.rate_limit_next("GET", r"models$", "secondary", times=10)
    with pytest.raises(GitHubRateLimited) as info:
        c.get(f"repos/{REPO}")
    assert info.value.kind == "secondary" and "secondary rate limit" in info.value.api_message
    assert slept == [60.0, 120.0] and sum(slept) <= DEFAULT_MAX_WAIT


def test_plain_403_is_a_permission_error_at_once(gh):
    c, slept = client(gh, token="ro")
    with pytest.raises(GitHubForbidden) as info:
        c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert info.value.status == 403 and "not accessible" in info.value.api_message
    assert slept == [] and len(gh.calls("POST")) == 1


def test_a_post_is_not_resent_after_a_5xx(gh):
    c, slept = client(gh)
    gh.fail_next("POST", r"/comments$", 502, after=True)  # GitHub created it, then said 502
    with pytest.raises(GitHubAmbiguous) as info:
        c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert info.value.status == 502 and "may have taken effect" in str(info.value)
    assert len(gh.calls("POST")) == 1 and len(gh.comments_on(REPO, 1)) == 1


def test_a_post_is_not_resent_after_a_read_timeout(gh):
    c, slept = client(gh, timeout=0.3)
    gh.stall_next("POST", r"/comments$", 1.0)  # created, but the answer comes too late
    with pytest.raises(GitHubAmbiguous) as info:
        c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert info.value.status == 0 and "ReadTimeout" in str(info.value)
    assert len(gh.calls("POST")) == 1 and len(gh.comments_on(REPO, 1)) == 1


def test_a_get_is_retried_after_a_read_timeout(gh):
    c, slept = client(gh, timeout=0.3)
    gh.stall_next("GET", r"models$", 1.0)
    assert c.get(f"repos/{REPO}")["full_name"] == REPO
    assert len(gh.calls("GET", "models$")) == 2


def test_connection_errors_are_retried_then_reported(gh):
    slept = []
    c = GitHubClient("tok", "http://127.0.0.1:9", sleep=slept.append)
    with pytest.raises(GitHubError) as info:
        c.get("repos/acme/models")
    assert "no answer" in str(info.value) and slept == [2.0, 4.0, 8.0]  # 5 tries
    # a POST that never got a connection was never sent: tried again, and not ambiguous
    with pytest.raises(GitHubError) as info:
        c.post("repos/acme/models/issues", {"title": "t"})
    assert not isinstance(info.value, GitHubAmbiguous) and len(slept) == 6


def test_api_url_comes_from_github_api_url(gh, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", gh.url + "/")
    c = GitHubClient("tok")
    assert c.api_url == gh.url
    assert c.get(f"repos/{REPO}")["full_name"] == REPO
    assert gh.calls()[-1].token == "tok"


def test_paginate_follows_link_headers(gh):
    for i in range(5):
        gh.add_comment(REPO, 1, f"c{i}", login="bob")
    c, _ = client(gh)
    bodies = [x["body"] for x in c.paginate(f"repos/{REPO}/issues/1/comments", per_page=2)]
    assert bodies == [f"c{i}" for i in range(5)]
    assert len(gh.calls("GET", "comments")) == 3


def test_login_is_none_for_installation_tokens(gh):
    assert client(gh)[0].authenticated_login() is None
    assert client(gh, token="pat")[0].authenticated_login() == "alice"
    with pytest.raises(GitHubNotFound):
        client(gh)[0].get("repos/acme/nothing")


# --- sticky comment ------------------------------------------------------------------------------

def test_scope_key_separates_repository_config_and_gate():
    keys = {scope_key("a/b", ".easeml.yml", "g"), scope_key("a/c", ".easeml.yml", "g"),
            scope_key("a/b", "other.yml", "g"), scope_key("a/b", ".easeml.yml", "h")}
    assert len(keys) == 4
    assert scope_key("a/b", "./.easeml.yml", "g") == scope_key("A/b", ".easeml.yml", "g")


def test_comment_by_token_login_created_then_updated_then_left_alone(gh):
    c, _ = client(gh, token="pat")
    mark = marker(REPO, ".easeml.yml", "g")
    gh.add_comment(REPO, 1, f"{mark}\nforged by a bot", login="evil[bot]")
    assert upsert_comment(c, REPO, 1, "one", mark, "alice").action == "created"
    assert upsert_comment(c, REPO, 1, "two", mark, "alice").action == "updated"
    assert upsert_comment(c, REPO, 1, "two", mark, "alice").action == "unchanged"
    mine = [x for x in gh.comments_on(REPO, 1) if x["user"]["login"] == "alice"]
    assert len(mine) == 1 and mine[0]["body"] == f"{mark}\ntwo"


# --- alert issue ---------------------------------------------------------------------------------

def test_alert_issue_is_not_repeated_after_the_team_closed_it(gh):
    c, _ = client(gh)
    alert = {"event": "retired", "text": "retired", "label_request": {"test_examples": 900}}
    first = upsert_alert_issue(c, REPO, alert, gate="g", fingerprint="ab" * 32, run_url="https://x/1")
    assert first.action == "created"
    assert upsert_alert_issue(c, REPO, alert, gate="g", fingerprint="ab" * 32).action == "unchanged"
    changed = dict(alert, label_request={"test_examples": 950})
    assert upsert_alert_issue(c, REPO, changed, gate="g", fingerprint="ab" * 32).action == "updated"
    issue = gh.issues_of(REPO)[0]
    assert "950" in issue["body"] and "Raised by https://x/1" in issue["body"]
    c.patch(f"repos/{REPO}/issues/{issue['number']}", {"state": "closed"})
    again = upsert_alert_issue(c, REPO, changed, gate="g", fingerprint="ab" * 32)
    assert again.action == "already-closed"
    # a different test set is a different event
    other = upsert_alert_issue(c, REPO, alert, gate="g", fingerprint="cd" * 32)
    assert other.action == "created" and len(gh.issues_of(REPO)) == 2


# --- runner protocols ----------------------------------------------------------------------------

def test_outputs_survive_newlines_and_forged_delimiters(tmp_path):
    path = tmp_path / "out"
    values = {"verdict": "pass", "clauses": '[{"text": "a\\nb"}]', "evil": "x\nverdict=fail\nEOF"}
    assert workflow.write_outputs(values, path)
    assert workflow.parse_output_file(path.read_text()) == values


def test_annotations_escape_commands_in_config_text():
    line = workflow.command("error", "clause `n > 0.5 %`\n::error::forged",
                            file="dir,x/.easeml.yml", line=4, title="a:b")
    assert line == ("::error file=dir%2Cx/.easeml.yml,line=4,title=a%3Ab::"
                    "clause `n > 0.5 %25`%0A::error::forged")
    assert "\n" not in line
    out = io.StringIO()
    workflow.mask(out, "k1\nk2")
    assert out.getvalue() == "::add-mask::k1\n::add-mask::k2\n"


# --- the report's secrecy ------------------------------------------------------------------------

CLAUSE = {"text": "n > 0.8 +/- 0.05", "verdict": "fail", "line": 3, "estimate": 0.8123,
          "margin": 0.0123, "labels": 4321}


@pytest.mark.parametrize("adaptivity", ["full", "firstChange"])
def test_adaptive_reports_show_only_the_verdict_bit(adaptivity):
    r = GateReport.build(gate="g", config_path=".easeml.yml", verdict="fail", exit_code=1,
                         adaptivity=adaptivity, clauses=[CLAUSE],
                         budget={"used": 2, "total": 8, "remaining": 6, "status": "active",
                                 "passes_used": 0}, metrics={"secret": 0.777})
    for text in (render_summary(r), render_comment(r, "<!-- m -->"), json.dumps(r.outputs())):
        for leak in ("0.8123", "0.0123", "4321", "0.777", "estimate"):
            assert leak not in text
    assert r.exit_code == 1 and json.loads(r.outputs()["clauses"])[0]["verdict"] == "fail"


def test_none_withholds_even_if_the_result_carried_a_verdict():
    r = GateReport.build(gate="g", config_path=".easeml.yml", verdict="fail", exit_code=1,
                         adaptivity="none", clauses=[CLAUSE], budget=None, show_metrics=True)
    assert r.verdict == "withheld" and r.exit_code == 0 and not r.show_metrics
    text = render_summary(r)
    assert "withheld" in text and "❌" not in text and "0.8123" not in text


def test_show_metrics_shows_them_and_says_the_guarantee_is_void():
    r = GateReport.build(gate="g", config_path=".easeml.yml", verdict="fail", exit_code=1,
                         adaptivity="full", clauses=[CLAUSE], budget=None, show_metrics=True)
    for text in (render_summary(r), render_comment(r, "<!-- m -->")):
        assert "0.8123" in text and "guarantee is **void**" in text


def test_underpowered_tolerance_depends_on_size_only_and_is_stated():
    clause = dict(CLAUSE, tolerance=0.0731, configured_tolerance=0.05)
    r = GateReport.build(gate="g", config_path=".easeml.yml", verdict="fail", exit_code=1,
                         adaptivity="full", clauses=[clause], budget=None)
    text = render_summary(r)
    assert "decided at +/- 0.0731 (configured +/- 0.05)" in text and "0.8123" not in text
    assert json.loads(r.outputs()["clauses"])[0]["tolerance"] == 0.0731


def test_steps_chart_counts_steps_per_day():
    chart = steps_chart(["2026-11-20T10:00:00+00:00", "2026-11-20T11:00:00+00:00",
                         "2026-11-22T09:00:00+00:00"], total=8)
    assert '["11-20", "11-22"]' in chart and "line [2, 3]" in chart and "0 --> 8" in chart
    assert steps_chart([], 8) is None


# --- the harness's expression resolver -----------------------------------------------------------

@pytest.mark.parametrize("expr, want", [
    ("inputs.new-model", "m.onnx"),
    ("inputs.missing || 'dflt'", "dflt"),
    ("inputs.flag && 'yes' || 'no'", "yes"),
    ("inputs.empty && 'yes' || 'no'", "no"),
    ("steps.python.outputs.python-path", "/py"),
    ("'it''s'", "it's"),
])
def test_resolver(expr, want):
    ctx = {"inputs": {"new-model": "m.onnx", "flag": "true", "empty": ""},
           "steps": {"python": {"outputs": {"python-path": "/py"}}}}
    assert evaluate(expr, ctx) == want
    assert resolve("x ${{ " + expr + " }} y", ctx) == f"x {want} y"


# --- `easeml-ci ledger status` on the repository ledger -----------------------------------------

def test_ledger_status_reads_the_repository_ledger(gh, tmp_path, monkeypatch):
    from easeml_ci.cli import main
    from easeml_ci.ledger import Ledger
    from easeml_ci.ledger.github_backend import GitHubBackend

    fp = "ef" * 32
    terms = {"condition": "n > 0.8 +/- 0.05", "reliability": 0.99, "mode": "fp-free",
             "adaptivity": "full", "steps": 4, "passes": None}
    ledger = Ledger(GitHubBackend(REPO, client=client(gh)[0]), fp, LEDGER_KEY)
    ledger.record_step(passed=True, terms=terms)
    cfg = tmp_path / ".easeml.yml"
    cfg.write_text("condition: n > 0.8 +/- 0.05\nreliability: 0.99\nsteps: 4\n"
                   f"ledger:\n  backend: github\n  repository: {REPO}\n")
    monkeypatch.setenv("GITHUB_TOKEN", "ro")  # reading needs no write permission
    monkeypatch.setenv("GITHUB_API_URL", gh.url)
    got = CliRunner().invoke(main, ["ledger", "status", "--config", str(cfg), "--json"])
    assert got.exit_code == 0, got.output
    row = json.loads(got.output)["testsets"][0]
    assert row["fingerprint"] == fp and row["used"] == 1 and row["remaining"] == 3
    monkeypatch.delenv("GITHUB_TOKEN")
    got = CliRunner().invoke(main, ["ledger", "status", "--config", str(cfg)])
    assert got.exit_code == 2 and "needs a token" in got.output


# --- creations that must not be duplicated: search, create, search again after an ambiguous failure

@pytest.mark.parametrize("fault", ["502 after creating", "read timeout after creating"])
def test_sticky_comment_is_not_duplicated_when_the_create_fails_ambiguously(gh, fault):
    c, slept = client(gh, timeout=0.3)
    mark = marker(REPO, ".easeml.yml", "g")
    if fault.startswith("502"):
        gh.fail_next("POST", r"/issues/1/comments$", 502, after=True)
    else:
        gh.stall_next("POST", r"/issues/1/comments$", 1.0)
    got = upsert_comment(c, REPO, 1, "verdict", mark)
    assert got.action == "created"
    assert [x["id"] for x in gh.comments_on(REPO, 1)] == [got.comment_id]
    assert len(gh.calls("POST", r"/comments$")) == 1  # found by its marker, not posted again


def test_sticky_comment_is_created_again_when_the_ambiguous_create_did_not_land(gh):
    c, _ = client(gh)
    gh.fail_next("POST", r"/issues/1/comments$", 502)  # refused before doing anything
    got = upsert_comment(c, REPO, 1, "verdict", marker(REPO, ".easeml.yml", "g"))
    assert got.action == "created" and len(gh.comments_on(REPO, 1)) == 1
    assert [r.status for r in gh.calls("POST", r"/comments$")] == [502, 201]


def test_sticky_comment_edit_that_landed_before_a_502_is_not_repeated(gh):
    c, _ = client(gh)
    mark = marker(REPO, ".easeml.yml", "g")
    upsert_comment(c, REPO, 1, "one", mark)
    gh.fail_next("PATCH", r"/issues/comments/\d+$", 502, after=True)
    assert upsert_comment(c, REPO, 1, "two", mark).action == "updated"
    assert len(gh.calls("PATCH")) == 1 and gh.comments_on(REPO, 1)[0]["body"] == f"{mark}\ntwo"


def test_sticky_comment_waits_out_a_secondary_rate_limit(gh):
    c, slept = client(gh)
    gh.rate_limit_next("POST", r"/issues/1/comments$", "secondary")
    assert upsert_comment(c, REPO, 1, "verdict", marker(REPO, ".easeml.yml", "g")).action == "created"
    assert slept == [60.0] and len(gh.comments_on(REPO, 1)) == 1


@pytest.mark.parametrize("fault", ["502 after creating", "read timeout after creating"])
def test_alert_issue_is_not_duplicated_when_the_create_fails_ambiguously(gh, fault):
    c, _ = client(gh, timeout=0.3)
    if fault.startswith("502"):
        gh.fail_next("POST", r"/issues$", 502, after=True)
    else:
        gh.stall_next("POST", r"/issues$", 1.0)
    alert = {"event": "exhausted", "text": "no steps left"}
    got = upsert_alert_issue(c, REPO, alert, gate="g", fingerprint="ab" * 32)
    assert got.action == "created" and [i["number"] for i in gh.issues_of(REPO)] == [got.number]
    assert len(gh.calls("POST", r"/issues$")) == 1
    # and the next run finds it as usual
    assert upsert_alert_issue(c, REPO, alert, gate="g", fingerprint="ab" * 32).action == "unchanged"
