"""The action end to end: action.yml run as a runner would, against the fake GitHub API.

Each test builds a git workspace whose base commit holds the old model's predictions and whose
head commit holds the pull request's model at the same path, so the action's default old model
(``git:BASE_SHA:PATH``) is exercised for real.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest

from action_harness import PR, REPO, VENV_BIN, ActionHarness, pull_request_event
from github_fake import BOT_LOGIN, FakeGitHub
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

CONDITION = "n - o > 0.1 +/- 0.05"


# --- workspace (the test set and prediction files: the `data` fixture, conftest.py) ------------

def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


CONFIG_TEMPLATE = """\
# the gate of this repository
name: quality
reliability: 0.99
mode: {mode}
adaptivity: {adaptivity}
steps: {steps}
condition: "{condition}"
{extra}"""


def make_workspace(root: Path, data: dict, head_model: str = "new", *, adaptivity="full",
                   steps=3, extra="", condition=CONDITION, mode="fp-free"
                   ) -> tuple[Path, str, str]:
    """A git repo: base commit with the old model, head commit with ``head_model``."""
    ws = root / "ws"
    (ws / "models").mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.email", "ci@example.com")
    git(ws, "config", "user.name", "ci")
    (ws / ".easeml.yml").write_text(CONFIG_TEMPLATE.format(
        adaptivity=adaptivity, steps=steps, condition=condition, extra=extra, mode=mode))
    (ws / "models" / "model.npy").write_bytes(data["old"].read_bytes())
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "base")
    base = git(ws, "rev-parse", "HEAD")
    (ws / "models" / "model.npy").write_bytes(data[head_model].read_bytes())
    git(ws, "commit", "-qam", "pr")
    head = git(ws, "rev-parse", "HEAD")
    return ws, base, head


def condition_line(ws: Path) -> int:
    lines = (ws / ".easeml.yml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith("condition:"))


def register(gh: FakeGitHub, ws: Path, base: str, testset: str, key: str | None = None,
             config: str = ".easeml.yml", webhook: str | None = None) -> subprocess.CompletedProcess:
    """The test set's owner registers it, as `easeml-ci testset register` in a job with a write
    token would, under the config as it is on the base commit."""
    import os

    owner_config = ws / ".git" / "owner-easeml.yml"
    owner_config.write_text(git(ws, "show", f"{base}:{config}") + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(ws.parent), "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": "ghs-write",
           "GITHUB_API_URL": gh.url, "EASEML_GITHUB_BACKOFF": "0.01"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this tree's code, not the
    if os.environ.get("EASEML_ORDER_KEY"):                         # installed checkout's
        env["EASEML_ORDER_KEY"] = os.environ["EASEML_ORDER_KEY"]  # the owner's order secret
    if key:
        env["EASEML_TESTSET_KEY"] = key
    hook = []
    if webhook:  # the webhook the workflow passes as alert-webhook is pinned too
        env["OWNER_WEBHOOK"] = webhook
        hook = ["--alert-webhook-env", "OWNER_WEBHOOK"]
    # the repository ledger unless the config names its own (--repository-ledger with a file
    # ledger in the config is refused: it would register somewhere the flag did not say)
    where = [] if "\nledger:" in owner_config.read_text() else ["--repository-ledger"]
    if os.environ.get("EASEML_LEDGER_KEY"):  # a plaintext test set's ledger key
        env["EASEML_LEDGER_KEY"] = os.environ["EASEML_LEDGER_KEY"]
    done = subprocess.run([f"{VENV_BIN}/easeml-ci", "testset", "register", testset, "--config",
                           str(owner_config), "--underpowered", *where, *hook],
                          cwd=ws, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


class OwnedHarness(ActionHarness):
    """A runner whose test set its owner registered before the first pull request ran."""

    def __init__(self, *args, gh: FakeGitHub, base: str, registered: bool,
                 owner_key: str | None = None, **kw):
        super().__init__(*args, **kw)
        self.gh, self.base, self.registered, self.owner_key = gh, base, registered, owner_key
        self._done: set = set()

    def run(self, inputs: dict[str, str], **kw):
        testset = inputs.get("testset")
        if self.registered and testset and testset not in self._done:
            register(self.gh, self.workspace, self.base, testset,
                     inputs.get("testset-key") or self.owner_key,
                     inputs.get("config", ".easeml.yml"), inputs.get("alert-webhook"))
            self._done.add(testset)
        return super().run(inputs, **kw)


def harness(gh: FakeGitHub, ws: Path, base: str, head: str, *, token="ghs-write", fork=False,
            registered=True, owner_key=None, **kw):
    event = pull_request_event(REPO, PR, base, head, fork=fork)
    return OwnedHarness(ws, api_url=gh.url, token=token, repository=REPO, event=event, gh=gh,
                        base=base, registered=registered, owner_key=owner_key, **kw)


def inputs(data, **kw) -> dict:
    out = {"new-model": "models/model.npy", "testset": str(data["testset"])}
    out.update(kw)
    return out


FLOAT = re.compile(r"(?<![\w.])\d+\.\d+")


def assert_no_test_set_numbers(text: str) -> None:
    """Only the verdict may leak: no decimal figures other than the condition's own."""
    allowed = set(FLOAT.findall(CONDITION))
    leaked = set(FLOAT.findall(text)) - allowed
    assert not leaked, f"team-facing text shows figures {leaked}:\n{text}"
    for word in ("accuracy", "estimate", "margin", "seconds"):
        assert word not in text.lower()


# --- the runs ------------------------------------------------------------------------------------

def test_pass_writes_summary_outputs_and_one_sticky_comment(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    # this one runs the venv's real console script; the others fork a pre-imported interpreter
    result = harness(gh, ws, base, head, bin_dir=VENV_BIN).run(inputs(data))
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pass"
    assert json.loads(result.outputs["clauses"]) == [
        {"text": CONDITION, "verdict": "pass", "line": condition_line(ws)}]
    assert result.outputs["budget-remaining"] == "2"
    assert result.outputs["testset-status"] == "active"
    summary = result.summary
    assert "gate `quality` passed" in summary
    assert f"| `{CONDITION}` | ✅ pass |" in summary
    assert "1 of 3 steps used" in summary and "▰" in summary
    assert "```mermaid" in summary and "xychart-beta" in summary and "line [1]" in summary
    assert "**Next:**" in summary
    comments = gh.comments_on(REPO, PR)
    assert len(comments) == 1
    body = comments[0]["body"]
    assert body.startswith("<!-- easeml-ci:gate scope=") and "✅ pass" in body
    assert comments[0]["user"]["login"] == BOT_LOGIN
    for text in (summary, body, result.stdout):
        assert_no_test_set_numbers(text)
    # inside Actions the budget lives in the repository ledger by default, and reports say so
    assert f"the repository ledger {REPO}@easeml-ledger" in summary
    assert f"the repository ledger {REPO}@easeml-ledger" in body
    # the token was the workflow token, sent as a bearer token; no traceback anywhere
    assert {r.token for r in gh.calls()} == {"ghs-write"}
    assert "Traceback" not in result.log


def test_fail_exits_1_and_annotates_the_condition_line(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "worse")
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 1, result.log
    assert result.outputs["verdict"] == "fail"
    errors = [a for a in result.annotations if a.level == "error"]
    assert len(errors) == 1
    assert errors[0].props["file"] == ".easeml.yml"
    assert errors[0].props["line"] == str(condition_line(ws))
    assert CONDITION in errors[0].message
    assert "❌ fail" in gh.comments_on(REPO, PR)[0]["body"]
    assert_no_test_set_numbers(result.summary)


def test_multi_clause_verdicts_stay_one_bit_under_adaptive_modes(gh, data, tmp_path):
    # new is right ~95% of the time (passes n > 0.9) but disagrees with old on ~32% (fails d < 0.2);
    # under adaptivity full the team may learn the formula's bit only, not which clause failed.
    condition = "n > 0.9 +/- 0.02 /\\\\ d < 0.2 +/- 0.05"
    ws, base, head = make_workspace(tmp_path, data, "new", condition=condition)
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 1, result.log
    clauses = json.loads(result.outputs["clauses"])
    assert [(c["text"], c["verdict"]) for c in clauses] == [
        ("n > 0.9 +/- 0.02", "undisclosed"), ("d < 0.2 +/- 0.05", "undisclosed")]
    errors = [a for a in result.annotations if a.level == "error"]
    assert len(errors) == 1 and errors[0].props["line"] == str(condition_line(ws))
    assert "per-clause verdicts are not disclosed" in errors[0].message
    assert "pass" not in result.summary.split("| clause |")[1].split("\n\n")[0]


def test_only_the_failing_clause_is_annotated_when_metrics_are_shown(gh, data, tmp_path):
    condition = "n > 0.9 +/- 0.02 /\\\\ d < 0.2 +/- 0.05"
    ws, base, head = make_workspace(tmp_path, data, "new", condition=condition,
                                    extra="show_metrics: true\n")
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 1, result.log
    clauses = json.loads(result.outputs["clauses"])
    assert [(c["text"], c["verdict"]) for c in clauses] == [
        ("n > 0.9 +/- 0.02", "pass"), ("d < 0.2 +/- 0.05", "fail")]
    errors = [a for a in result.annotations if a.level == "error"]
    assert [(a.props["line"], a.message) for a in errors] == [
        (str(condition_line(ws)), "clause `d < 0.2 +/- 0.05` failed")]
    assert "| `d < 0.2 +/- 0.05` | ❌ fail |" in result.summary
    assert "void" in result.summary.lower()


def test_withheld_under_adaptivity_none_does_not_fail_and_hides_the_verdict(gh, data, tmp_path):
    sink = tmp_path / "private" / "verdicts.jsonl"
    sink.parent.mkdir()
    ws, base, head = make_workspace(tmp_path, data, "worse", adaptivity="none",
                                    extra=f"private_sink: {sink}\n")
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "withheld"
    assert json.loads(result.outputs["clauses"])[0]["verdict"] == "withheld"
    body = gh.comments_on(REPO, PR)[0]["body"]
    for text in (result.summary, body, result.stdout):
        assert "fail" not in text.lower().replace("does not fail", "")
        assert "❌" not in text and "✅" not in text
    # the real verdict went to the private sink only
    record = json.loads(sink.read_text().splitlines()[-1])
    assert record["verdict"] == "fail"


def test_exhausted_budget_raises_exactly_one_alert_issue(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=1)
    h = harness(gh, ws, base, head)
    hook = {"alert-webhook": f"{gh.url}/hooks/T000/B000"}
    first = h.run(inputs(data, **hook))
    assert first.exit_code == 0 and first.outputs["testset-status"] == "exhausted", first.log
    issues = gh.issues_of(REPO)
    assert len(issues) == 1, "the step that spent the budget raises the alert"
    issue = issues[0]
    assert {lab["name"] for lab in issue["labels"]} == {"easeml-ci", "new-test-set"}
    assert "easeml-ci:alert fingerprint=" in issue["body"] and "event=exhausted" in issue["body"]
    assert "test examples needed" in issue["body"]
    assert first.outputs["alert-issue"] == f"#{issue['number']}"
    runs = [h.run(inputs(data, **hook)) for _ in range(2)]
    for r in runs:
        assert r.exit_code == 3, r.log
        assert r.outputs["verdict"] == "exhausted"
        assert "new test set" in r.summary.lower()
        assert "Traceback" not in r.log
    assert len(gh.issues_of(REPO)) == 1
    assert len(gh.calls("POST", r"/issues$")) == 1
    assert not gh.calls("PATCH", r"/issues/\d+$"), "an unchanged alert is left alone"
    # the webhook from the alert-webhook input got the alert once, for the one event
    assert len(gh.webhooks) == 1
    assert "test set" in gh.webhooks[0]["text"] and gh.webhooks[0]["easeml_ci"]["event"] == "exhausted"
    # the repeated exhausted report is the same comment, left alone the second time
    assert len(gh.comments_on(REPO, PR)) == 1
    assert len(gh.calls("PATCH", r"/issues/comments/")) == 1
    assert "pull request comment unchanged" in runs[1].stdout


def test_comment_is_updated_not_duplicated_and_a_humans_copy_is_left_alone(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "worse")
    h = harness(gh, ws, base, head)
    assert h.run(inputs(data)).exit_code == 1
    ours = gh.comments_on(REPO, PR)[0]
    # a person quotes our comment, marker included: it must never be taken for ours
    human = gh.add_comment(REPO, PR, ours["body"], login="octocat")
    # the PR gets a better model; same gate, same PR
    (ws / "models" / "model.npy").write_bytes(data["new"].read_bytes())
    git(ws, "commit", "-qam", "better")
    second = h.run(inputs(data))
    assert second.exit_code == 0, second.log
    comments = gh.comments_on(REPO, PR)
    assert [c["id"] for c in comments] == [ours["id"], human]
    assert "✅ pass" in comments[0]["body"] and "❌ fail" in comments[1]["body"]
    assert len(gh.calls("POST", r"/issues/\d+/comments$")) == 1
    assert len(gh.calls("PATCH", r"/issues/comments/")) == 1
    # a second gate on the same PR keeps its own comment
    third = h.run(inputs(data, **{"gate-name": "latency"}))
    assert third.exit_code == 0
    assert len(gh.comments_on(REPO, PR)) == 3


def test_fork_pull_request_with_read_only_token_still_reports(gh, data, tmp_path):
    # a self-hosted runner's persistent file ledger: the fork's token need not write anything
    ws, base, head = make_workspace(tmp_path, data, "new",
                                    extra=f"ledger:\n  path: {tmp_path / 'runner-disk'}\n")
    result = harness(gh, ws, base, head, token="ghs-read", fork=True).run(inputs(data))
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pass"
    assert "passed" in result.summary
    warnings = [a for a in result.annotations if a.level == "warning"]
    assert any("HTTP 403" in w.message and "fork" in w.message for w in warnings)
    assert gh.comments_on(REPO, PR) == []
    assert "Traceback" not in result.log


def test_fork_with_the_default_ledger_is_refused_before_the_test_set_is_opened(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    result = harness(gh, ws, base, head, token="ghs-read", fork=True).run(inputs(data))
    assert result.exit_code == 2, result.log
    assert "contents: write" in result.summary and "loading test set" not in result.log
    assert json.loads(result.outputs["clauses"]) == []


def test_a_file_ledger_inside_the_workspace_is_refused_on_a_runner(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", extra="ledger:\n  path: .easeml/l\n")
    result = harness(gh, ws, base, head, registered=False).run(inputs(data))
    assert result.exit_code == 2, result.log
    assert "throws away after the job" in result.summary and "loading test set" not in result.log
    assert not (ws / ".easeml").exists()


def test_a_pull_request_cannot_start_a_budget_for_an_unregistered_test_set(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    result = harness(gh, ws, base, head, registered=False).run(inputs(data))
    assert result.exit_code == 2, result.log
    assert "is not registered" in result.summary and "testset register" in result.summary
    assert "heads/easeml-ledger" not in gh.repos[REPO].refs or not [
        p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/easeml-ledger"]]["tree"]
        if p.endswith(".jsonl")]


def test_fork_cannot_spend_the_repository_ledger_and_reveals_nothing(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new",
                                    extra=f"ledger:\n  backend: github\n  repository: {REPO}\n")
    result = harness(gh, ws, base, head, token="ghs-read", fork=True).run(inputs(data))
    assert result.exit_code == 2, result.log
    assert result.outputs["verdict"] == "error"
    assert "contents: write" in result.summary and "nothing was revealed" in result.summary
    assert "✅" not in result.summary and "❌" not in result.summary
    assert json.loads(result.outputs["clauses"]) == []
    ledger_files = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/easeml-ledger"]]
                    ["tree"] if p.endswith(".jsonl")]
    entries = gh.file_on_branch(REPO, "easeml-ledger", ledger_files[0]).splitlines()
    assert [json.loads(e)["kind"] for e in entries] == ["register"]  # the owner's, no step
    assert "Traceback" not in result.log


def test_concurrent_runs_never_spend_the_same_step_of_the_repository_ledger(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=3,
                                    extra=f"ledger:\n  backend: github\n  repository: {REPO}\n")
    # hold each run's first ledger write until the other's has arrived too: both were computed
    # from the same (empty) ledger, so exactly one must be refused by the sha compare-and-swap
    barrier = threading.Barrier(2, timeout=30)
    held: list[str] = []
    lock = threading.Lock()

    def line_up(method, path):
        if method == "PUT" and path.endswith(".jsonl"):
            with lock:
                if len(held) >= 2:
                    return
                held.append(path)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    register(gh, ws, base, str(data["testset"]))
    gh.before_request = line_up
    h = harness(gh, ws, base, head, registered=False)
    results: list = [None, None]

    def go(i):
        results[i] = h.run(inputs(data, **{"gate-name": f"g{i}"}))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    gh.before_request = None
    assert all(r.exit_code == 0 for r in results), [r.log for r in results]
    assert not any("ledger backend" in a.message for r in results for a in r.annotations)
    # each run reports the budget as of its step's completion (count before open), which counts
    # the other's reserved step once that landed first: the run completing last sees both spent;
    # that no step was spent twice is the ledger's to show (below)
    remaining = sorted(r.outputs["budget-remaining"] for r in results)
    assert remaining in (["1", "1"], ["1", "2"]), remaining
    (path,) = [p for p in gh.repos[REPO].commits[gh.repos[REPO].refs["heads/easeml-ledger"]]["tree"]
               if p.endswith(".jsonl")]
    entries = [json.loads(x) for x in gh.file_on_branch(REPO, "easeml-ledger", path).splitlines()]
    steps = [e for e in entries if e["kind"] == "step"]
    assert len(steps) == 2 and len({e["seq"] for e in steps}) == 2
    assert sum(e["kind"] == "register" for e in entries) == 1
    # the compare-and-swap was really contended: the first two writes raced, one was refused
    puts = gh.calls("PUT", r"\.jsonl$")
    assert sorted(r.status for r in puts[1:3]) == [200, 409]  # [0] is the owner's register
    assert len(held) == 2
    from easeml_ci.ledger import Ledger
    from easeml_ci.ledger.github_backend import GitHubBackend
    from easeml_ci.github.api import GitHubClient
    ledger = Ledger(GitHubBackend(REPO, client=GitHubClient("ghs-write", gh.url)), path[7:-6], LEDGER_KEY)
    assert ledger.verify().ok


def test_a_502_once_on_the_comment_is_retried(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    gh.fail_next("POST", r"/issues/\d+/comments$", 502)
    result = harness(gh, ws, base, head).run(inputs(data))
    assert result.exit_code == 0, result.log
    assert [r.status for r in gh.calls("POST", r"/comments$")] == [502, 201]
    assert len(gh.comments_on(REPO, PR)) == 1


def test_encrypted_test_set_with_the_key_from_a_secret(gh, data, tmp_path):
    """On a push to the default branch, in a repository set up as docs/action.md asks (a
    pull_request job holding the key is refused: tests/easeml_ci/test_action_trust.py)."""
    gh.secure(REPO)
    ws, base, head = make_workspace(tmp_path, data, "new")
    register(gh, ws, base, str(data["encrypted"]), data["key"])
    push = {"ref": "refs/heads/main", "before": base, "after": head,
            "repository": {"full_name": REPO, "default_branch": "main"}}
    h = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO, event=push,
                      event_name="push", sha=head)
    result = h.run(inputs(data, testset=str(data["encrypted"]), **{"testset-key": data["key"]}))
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pass"
    # the key is masked before anything else is printed, and appears nowhere else
    first, rest = result.stdout.split("\n", 1)
    assert first == f"::add-mask::{data['key']}"
    for text in (rest, result.stderr, result.summary):
        assert data["key"] not in text


def test_fork_without_secrets_cannot_open_the_test_set_and_says_why(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    ws, base, head = make_workspace(tmp_path / "self-hosted", data, "new",
                                    extra=f"ledger:\n  path: {tmp_path / 'runner-disk'}\n")
    result = harness(gh, ws, base, head, token="ghs-read", fork=True, owner_key=data["key"]
                     ).run(inputs(data, testset=str(data["encrypted"])))
    assert result.exit_code == 2, result.log
    assert result.outputs["verdict"] == "error"
    assert "EASEML_TESTSET_KEY is not set" in result.summary
    assert "testset-key input was empty" in result.summary and "forks" in result.summary
    assert "Traceback" not in result.log


def test_config_from_base_keeps_a_pull_request_from_loosening_its_own_gate(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new")
    # the pull request also turns on show_metrics (which would void the guarantee)
    with open(ws / ".easeml.yml", "a") as fh:
        fh.write("show_metrics: true\n")
    git(ws, "commit", "-qam", "peek")
    head = git(ws, "rev-parse", "HEAD")
    h = harness(gh, ws, base, head)
    trusted = h.run(inputs(data, **{"config-from-base": "true"}))
    assert trusted.exit_code == 0, trusted.log
    assert "void" not in trusted.summary
    assert_no_test_set_numbers(trusted.summary)
    assert "from the base commit" in trusted.stdout
    # without it, the pull request's config is read, but the terms its owner registered are
    # pinned: turning on show_metrics is refused, naming the key, and nothing is shown
    untrusted = h.run(inputs(data, **{"config-from-base": "false"}))
    assert untrusted.exit_code == 2, untrusted.log
    assert "show_metrics" in untrusted.summary and "registered" in untrusted.summary
    assert "void" not in untrusted.summary and json.loads(untrusted.outputs["clauses"]) == []


def test_too_small_test_set_exits_3_unless_run_underpowered(gh, data, tmp_path):
    ws, base, head = make_workspace(tmp_path, data, "new", steps=32)
    h = harness(gh, ws, base, head)
    small = h.run(inputs(data))
    assert small.exit_code == 3, small.log
    assert small.outputs["verdict"] == "error" and "need" in small.summary
    under = h.run(inputs(data, underpowered="true"))
    assert under.exit_code in (0, 1), under.log
    assert "Underpowered:" in under.summary and "configured +/- 0.05" in under.summary
    assert "tolerance" in json.loads(under.outputs["clauses"])[0]


def test_workflow_run_job_comments_on_the_pr_named_by_input(gh, data, tmp_path):
    """The trusted half of the fork-safe split: no pull_request in the event, PR number given."""
    ws, base, head = make_workspace(tmp_path, data, "new")
    event = {"action": "completed", "workflow_run": {"id": 99, "head_sha": head,
                                                     "conclusion": "success", "pull_requests": []}}
    register(gh, ws, base, str(data["testset"]))
    h = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO, event=event,
                      event_name="workflow_run", sha=base)  # the default branch's commit
    result = h.run(inputs(data, **{"old-model": f"git:{base}:models/model.npy",
                                   "pr-number": str(PR)}))
    assert result.exit_code == 0, result.log
    assert len(gh.comments_on(REPO, PR)) == 1
    # without an explicit old model there is no base commit to take it from: a clear error
    missing = h.run(inputs(data, **{"pr-number": str(PR)}))
    assert missing.exit_code == 2 and "input old-model is required" in missing.log


@pytest.mark.parametrize("given, needle", [
    ({"comment": "maybe"}, "input comment: expected true or false, got 'maybe'"),
    ({"pr-number": "x7"}, "input pr-number: expected a pull request number"),
    ({"config": "missing.yml"}, "missing.yml"),
    ({"new-model": "models/nope.npy"}, "models/nope.npy"),
])
def test_bad_inputs_are_one_line_errors_with_exit_2(gh, data, tmp_path, given, needle):
    ws, base, head = make_workspace(tmp_path, data, "new")
    result = harness(gh, ws, base, head, registered=False).run(inputs(data, **given))
    assert result.exit_code == 2, result.log
    assert needle in result.log
    assert "Traceback" not in result.log
