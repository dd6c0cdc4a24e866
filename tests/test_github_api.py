"""The GitHub REST client, the runner protocols, the report's secrecy and the harness resolver."""
from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from action_harness import evaluate, resolve
from easeml_ci.github import workflow
from easeml_ci.github.alerts import upsert_alert_issue
from easeml_ci.github.api import GitHubClient, GitHubForbidden, GitHubNotFound, RetryPolicy
from easeml_ci.github.comment import marker, scope_key, upsert_comment
from easeml_ci.github.report import GateReport, render_comment, render_summary, steps_chart
from github_fake import fake_github  # noqa: F401  (fixture)

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
    c = GitHubClient(token, gh.url, sleep=slept.append, clock=lambda: 1000.0, **kw)
    return c, slept


# --- retries -------------------------------------------------------------------------------------

def test_5xx_is_retried_with_exponential_backoff(gh):
    c, slept = client(gh)
    gh.fail_next("GET", r"^/repos/acme/models$", 502, times=2)
    assert c.get(f"repos/{REPO}")["default_branch"] == "main"
    assert slept == [1.0, 2.0]
    assert [r.status for r in gh.calls("GET", "models$")] == [502, 502, 200]


def test_gives_up_after_the_configured_attempts(gh):
    c, slept = client(gh, retry=RetryPolicy(attempts=3, base_delay=0.5))
    gh.fail_next("GET", r"models$", 503, times=5)
    with pytest.raises(Exception) as info:
        c.get(f"repos/{REPO}")
    assert "503" in str(info.value) and len(slept) == 2


@pytest.mark.parametrize("status, headers, wait", [
    (403, {"retry-after": "7"}, 7.0),
    (429, {"retry-after": "3"}, 3.0),
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, 31.0),
])
def test_secondary_rate_limits_wait_as_github_asks(gh, status, headers, wait):
    c, slept = client(gh)
    gh.fail_next("POST", r"/comments$", status, headers=headers,
                 message="You have exceeded a secondary rate limit")
    got = c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert got["body"] == "hi" and slept == [wait]
    assert len(gh.comments_on(REPO, 1)) == 1


def test_plain_403_is_a_permission_error_at_once(gh):
    c, slept = client(gh, token="ro")
    with pytest.raises(GitHubForbidden) as info:
        c.post(f"repos/{REPO}/issues/1/comments", {"body": "hi"})
    assert info.value.status == 403 and "not accessible" in info.value.api_message
    assert slept == []


def test_connection_errors_are_retried_then_reported(gh):
    c, slept = GitHubClient("tok", "http://127.0.0.1:9", sleep=lambda s: None,
                            retry=RetryPolicy(attempts=2)), None
    with pytest.raises(Exception) as info:
        c.get("repos/acme/models")
    assert "no answer" in str(info.value)


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
    ledger = Ledger(GitHubBackend(REPO, client=client(gh)[0]), fp)
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
