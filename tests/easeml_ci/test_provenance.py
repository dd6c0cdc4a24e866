"""easeml_ci.github.provenance against the fake GitHub API: which PR a workflow_run verdict is
about (found from the head commit, never taken from the fork's artifact), and the commit status
that lets branch protection require the verdict."""
from __future__ import annotations

import pytest

from easeml_ci.errors import UsageError
from easeml_ci.github.api import GitHubClient, GitHubForbidden
from easeml_ci.github.provenance import (
    commit_status_for, post_commit_status, pull_request_for_head, status_context,
)
from github_fake import FakeGitHub

REPO = "acme/models"
HEAD = "a" * 40
OTHER = "b" * 40


def client_for(fake: FakeGitHub, permission: str = "write") -> GitHubClient:
    token = fake.add_token(f"tok-{permission}", permission=permission)
    return GitHubClient(token, fake.url, sleep=lambda s: None)  # no real waits in retries


@pytest.fixture
def repo(fake_github):
    fake_github.add_repo(REPO)
    fake_github.set_pull_request_head(REPO, 7, HEAD, head_repo="contributor/models")
    fake_github.set_pull_request_head(REPO, 8, OTHER)
    return fake_github


# --- which pull request ---------------------------------------------------------------------------

def test_the_pull_request_is_found_from_the_head_commit(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD) == 7
    assert pull_request_for_head(client_for(repo), REPO, OTHER) == 8
    assert repo.calls("GET", rf"/commits/{HEAD}/pulls$")


def test_a_matching_claim_is_accepted(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7) == 7


@pytest.mark.parametrize("claim", [8, 9, 1])
def test_a_claim_that_names_another_pull_request_is_refused(repo, claim):
    with pytest.raises(UsageError) as err:
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=claim)
    assert err.value.exit_code == 2
    assert f"#{claim}" in err.value.message and "#7" in err.value.message
    assert "refusing" in err.value.message


def test_an_unknown_head_commit_is_refused(repo):
    with pytest.raises(UsageError, match="no open pull request .* has head commit cccccccccccc"):
        pull_request_for_head(client_for(repo), REPO, "c" * 40)


def test_a_closed_pull_request_is_refused(repo):
    repo.repos[REPO].issues[7]["state"] = "closed"
    with pytest.raises(UsageError, match="no open pull request"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7)


def test_a_pull_request_that_moved_on_is_refused(repo):
    """The fork pushed again: the old run's verdict is not reported on the PR any more."""
    repo.set_pull_request_head(REPO, 7, "d" * 40, head_repo="contributor/models")
    with pytest.raises(UsageError, match="no open pull request"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7)


def test_fork_pull_requests_missing_from_the_commit_endpoint_are_found_in_the_pulls_list(repo):
    repo.commit_pulls_omit_forks = True
    for n in range(20, 140):  # more than one page of open pull requests
        repo.set_pull_request_head(REPO, n, f"{n:040x}")
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=7) == 7
    listed = repo.calls("GET", r"/repos/acme/models/pulls$")
    assert listed and listed[0].query.get("state") == "open"
    with pytest.raises(UsageError, match="does not have head commit"):
        pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=8)


def test_a_commit_the_commit_endpoint_does_not_know_is_looked_up_in_the_pulls_list(repo):
    repo.fail_next("GET", r"/commits/.*/pulls$", status=404, message="No commit found")
    assert pull_request_for_head(client_for(repo), REPO, HEAD) == 7
    repo.fail_next("GET", r"/commits/.*/pulls$", status=404, message="No commit found")
    with pytest.raises(UsageError, match="no open pull request"):
        pull_request_for_head(client_for(repo), REPO, "e" * 40)


def test_the_same_head_in_two_pull_requests_needs_a_claim(repo):
    repo.set_pull_request_head(REPO, 9, HEAD, head_repo="contributor/models", base_ref="release")
    with pytest.raises(UsageError, match="several open pull requests .*#7, #9"):
        pull_request_for_head(client_for(repo), REPO, HEAD)
    assert pull_request_for_head(client_for(repo), REPO, HEAD, claimed_number=9) == 9


@pytest.mark.parametrize("sha", ["", "abc123", "g" * 40, HEAD + "0", "$(id)", None])
def test_a_malformed_head_sha_is_refused_before_any_call(repo, sha):
    with pytest.raises(UsageError, match="input head-sha: expected a full commit SHA"):
        pull_request_for_head(client_for(repo), REPO, sha)
    assert not repo.calls("GET", r"/pulls")


def test_a_token_that_may_not_list_pull_requests_is_a_configuration_error(repo):
    repo.fail_next("GET", r"/commits/.*/pulls$", status=403,
                   message="Resource not accessible by integration")
    with pytest.raises(UsageError, match="pull-requests: read"):
        pull_request_for_head(client_for(repo), REPO, HEAD)


def test_the_head_sha_is_compared_case_insensitively(repo):
    assert pull_request_for_head(client_for(repo), REPO, HEAD.upper(), claimed_number=7) == 7


# --- the commit status ----------------------------------------------------------------------------

def test_post_commit_status_posts_on_the_head_commit(repo):
    got = post_commit_status(client_for(repo), REPO, HEAD, "success", "the model meets it",
                             "easeml-ci/quality", target_url="https://github.com/acme/run/1")
    assert got["state"] == "success"
    [status] = repo.statuses_on(REPO, HEAD)
    assert status == {**status, "state": "success", "context": "easeml-ci/quality",
                      "description": "the model meets it",
                      "target_url": "https://github.com/acme/run/1"}
    [call] = repo.calls("POST", rf"/statuses/{HEAD}$")
    assert "target_url" in call.body


def test_a_long_description_is_cut_to_what_github_accepts(repo):
    post_commit_status(client_for(repo), REPO, HEAD, "failure", "x" * 300, "easeml-ci/q")
    [status] = repo.statuses_on(REPO, HEAD)
    assert len(status["description"]) == 140 and status["description"].endswith("…")


@pytest.mark.parametrize("state", ["passed", "", "SUCCESS", None])
def test_an_unknown_state_is_refused_before_any_call(repo, state):
    with pytest.raises(ValueError, match="state must be one of pending, success, failure, error"):
        post_commit_status(client_for(repo), REPO, HEAD, state, "d", "easeml-ci/q")
    assert not repo.calls("POST")


def test_a_read_only_token_cannot_post_a_status(repo):
    with pytest.raises(GitHubForbidden):
        post_commit_status(client_for(repo, "read"), REPO, HEAD, "success", "d", "easeml-ci/q")
    assert repo.statuses_on(REPO, HEAD) == []


def test_every_verdict_has_a_fixed_status_without_numbers():
    states = {v: commit_status_for(v) for v in ("pass", "fail", "withheld", "exhausted", "error")}
    assert {v: s for v, (s, _) in states.items()} == {
        "pass": "success", "fail": "failure", "withheld": "success", "exhausted": "failure",
        "error": "error"}
    for _, text in states.values():
        assert len(text) <= 140 and not any(c.isdigit() for c in text)
    with pytest.raises(ValueError):
        commit_status_for("maybe")


def test_status_context_names_the_gate():
    assert status_context("quality") == "easeml-ci/quality"
    assert status_context("  two\nwords ") == "easeml-ci/two words"
    assert status_context("") == "easeml-ci/easeml-ci"


# --- the fork-safe flow through the action harness (workflow_run, the fake API) -------------------

import hashlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from action_harness import ActionHarness  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ROWS = 6000
CONFIG = """\
name: quality
reliability: 0.99
mode: fp-free
adaptivity: full
steps: 3
condition: "n - o > 0.1 +/- 0.05"
ledger:
  backend: file
  path: {ledger}
"""


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def workflow_run_event(repository: str, head_sha: str, *, event: str = "pull_request",
                       conclusion: str = "success") -> dict:
    """A ``workflow_run`` (completed) payload: the untrusted run of easeml-model on a fork PR."""
    owner, name = repository.split("/")
    return {
        "action": "completed",
        "workflow_run": {
            "id": 9001, "name": "easeml-model", "event": event, "status": "completed",
            "conclusion": conclusion, "head_sha": head_sha, "head_branch": "feature",
            "head_repository": {"full_name": f"contributor/{name}", "fork": True},
            "repository": {"full_name": repository}, "pull_requests": [],
        },
        "repository": {"full_name": repository, "name": name, "owner": {"login": owner},
                       "default_branch": "main"},
        "sender": {"login": "contributor", "type": "User"},
    }


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    root = tmp_path_factory.mktemp("fork-data")
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, ROWS)
    np.savez(root / "testset.npz", X=rng.normal(size=(ROWS, 3)), y=y)
    out = {"testset": root / "testset.npz"}
    for name, acc in (("new", 0.95), ("old", 0.70)):
        out[name] = root / f"{name}.npy"
        np.save(out[name], np.where(rng.random(ROWS) >= acc, 1 - y, y))
    return out


@pytest.fixture
def fork_run(repo, predictions, tmp_path):
    """The trusted job's world: the base branch checked out, the fork's model as an artifact."""
    ws = tmp_path / "ws"
    (ws / "models").mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.email", "ci@example.com")
    git(ws, "config", "user.name", "ci")
    ledger = tmp_path / "ledger"
    (ws / ".easeml.yml").write_text(CONFIG.format(ledger=ledger))
    (ws / "models" / "model.npy").write_bytes(predictions["old"].read_bytes())
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "base")
    artifact = tmp_path / "runner-temp-pr"
    artifact.mkdir()
    (artifact / "model.npy").write_bytes(predictions["new"].read_bytes())
    repo.add_token("ghs-write")
    harness = ActionHarness(ws, api_url=repo.url, token="ghs-write", repository=REPO,
                            event=workflow_run_event(REPO, HEAD), event_name="workflow_run",
                            sha=git(ws, "rev-parse", "HEAD"))

    def run(**overrides):
        inputs = {"new-model": str(artifact / "model.npy"), "old-model": "git:HEAD:models/model.npy",
                  "testset": str(predictions["testset"]), "config-from-base": "false",
                  "head-sha": HEAD, "pr-number": "7", "commit-status": "true"}
        inputs.update(overrides)
        return harness.run({k: v for k, v in inputs.items() if v is not None})

    # The owner's run on the default branch (a push, register: true) opens the test set's
    # budget: a pull request, forked or not, cannot start one. The base model against itself
    # fails (exit 1).
    push = ActionHarness(ws, api_url=repo.url, token="ghs-write", repository=REPO,
                         event={"ref": "refs/heads/main", "before": "0" * 40,
                                "repository": {"full_name": REPO, "default_branch": "main"}},
                         event_name="push", sha=git(ws, "rev-parse", "HEAD"))
    first = push.run({"new-model": "models/model.npy", "old-model": "git:HEAD:models/model.npy",
                      "testset": str(predictions["testset"]), "config-from-base": "false",
                      "register": "true"})
    assert first.exit_code == 1, first.log
    run.ledger = ledger
    run.harness = harness
    run.steps_before = steps_in(ledger)
    assert run.steps_before == 1
    return run


def steps_in(ledger: Path) -> int:
    """Steps spent in the file ledger (entries of kind "step")."""
    import json

    files = [f for f in ledger.rglob("*") if f.is_file()] if ledger.exists() else []
    entries = [json.loads(line) for f in files for line in f.read_text().splitlines()
               if line.strip().startswith("{")]
    return sum(e.get("kind") == "step" for e in entries)


def test_fork_safe_gate_reports_on_the_pull_request_of_the_head_commit(repo, fork_run):
    result = fork_run()
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pass"
    # the comment goes to #7, whose head is workflow_run.head_sha; the victim #8 is untouched
    assert len(repo.comments_on(REPO, 7)) == 1 and repo.comments_on(REPO, 8) == []
    [status] = repo.statuses_on(REPO, HEAD)
    assert status["state"] == "success" and status["context"] == "easeml-ci/quality"
    assert status["target_url"] == "https://github.com/acme/models/actions/runs/4242"
    # a fixed sentence without numbers, and the seal (an HMAC of public fields and the state,
    # under the key: github/seal.py) after it
    sentence, seal = status["description"].rsplit(" [seal ", 1)
    assert not any(c.isdigit() for c in sentence) and seal.endswith("]")
    assert repo.statuses_on(REPO, OTHER) == []
    assert HEAD[:12] in result.summary  # the report names the commit judged, not the base
    assert steps_in(fork_run.ledger) == fork_run.steps_before + 1


def test_a_forged_pr_number_is_refused_before_anything_is_evaluated(repo, fork_run):
    result = fork_run(**{"pr-number": "8"})  # the fork aims its verdict at pull request #8
    assert result.exit_code == 2, result.log
    assert result.outputs["verdict"] == "error"
    assert "#8" in result.log and "does not have head commit" in result.log
    assert "Traceback" not in result.log
    # nothing revealed, nothing spent: no comment anywhere, no verdict status, no ledger step
    assert repo.comments_on(REPO, 7) == [] and repo.comments_on(REPO, 8) == []
    assert [s["state"] for s in repo.statuses_on(REPO, HEAD)] == ["error"]
    assert repo.statuses_on(REPO, OTHER) == []
    assert steps_in(fork_run.ledger) == fork_run.steps_before
    assert not repo.calls("POST", r"/issues")


def test_the_refusal_comes_before_the_test_set_is_touched(repo, fork_run, tmp_path):
    result = fork_run(**{"pr-number": "8", "testset": str(tmp_path / "absent.enc")})
    assert result.exit_code == 2
    assert "does not have head commit" in result.log and "absent.enc" not in result.log


def test_a_head_commit_that_is_no_open_pull_requests_is_refused(repo, fork_run):
    repo.repos[REPO].issues[7]["state"] = "closed"
    result = fork_run(**{"pr-number": None})
    assert result.exit_code == 2 and "no open pull request" in result.log
    assert repo.comments_on(REPO, 7) == [] and steps_in(fork_run.ledger) == fork_run.steps_before


# --- the shell steps of the fork-safe workflow, run for real on crafted artifacts -----------------

FORK_SAFE = yaml.safe_load((ROOT / "examples/workflows/easeml-gate-fork-safe.yml").read_text())
CHECK_ARTIFACT = next(s for s in FORK_SAFE["jobs"]["preflight"]["steps"] if s.get("id") == "artifact")
TAKE_FILE = next(s for s in FORK_SAFE["jobs"]["gate"]["steps"] if "sha256sum" in s.get("run", ""))


def run_step(step: dict, tmp_path: Path, **env) -> tuple[int, dict, str]:
    out = tmp_path / "github-output"
    out.write_text("")
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                          env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(out), **env},
                          capture_output=True, text=True, timeout=30)
    lines = out.read_text().splitlines()
    return done.returncode, dict(line.split("=", 1) for line in lines), done.stdout + done.stderr


def artifact_dir(tmp_path: Path, pr: bytes | None = b"7\n") -> Path:
    d = tmp_path / "pr"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"\x08\x07onnx-bytes")
    if pr is not None:
        (d / "pr-number").write_bytes(pr)
    return d


def test_the_preflight_takes_one_model_and_a_number(tmp_path):
    d = artifact_dir(tmp_path)
    rc, outputs, log = run_step(CHECK_ARTIFACT, tmp_path, PR_DIR=str(d))
    assert rc == 0, log
    assert outputs == {"sha256": hashlib.sha256(b"\x08\x07onnx-bytes").hexdigest(), "pr": "7"}


@pytest.mark.parametrize("pr,hint", [(b"7\nsha256=00\n::add-mask::x\n", "725600"),
                                     (b"$(id)", ""), (b"12345678901234567890", "123456789"),
                                     (None, "")])
def test_the_pr_hint_is_digits_only_and_cannot_add_outputs(tmp_path, pr, hint):
    rc, outputs, log = run_step(CHECK_ARTIFACT, tmp_path, PR_DIR=str(artifact_dir(tmp_path, pr)))
    assert rc == 0, log
    assert set(outputs) == {"sha256", "pr"} and outputs["pr"] == hint


@pytest.mark.parametrize("craft", ["extra file", "nested dir", "symlinked model", "no model"])
def test_the_preflight_refuses_any_other_artifact(tmp_path, craft):
    d = artifact_dir(tmp_path)
    if craft == "extra file":
        (d / "run.sh").write_text("echo hi")
    elif craft == "nested dir":
        (d / "sub").mkdir()
        (d / "sub" / "model.onnx").write_bytes(b"x")
    elif craft == "symlinked model":
        (d / "model.onnx").unlink()
        (d / "model.onnx").symlink_to("/etc/hostname")
    else:
        (d / "model.onnx").unlink()
    rc, outputs, log = run_step(CHECK_ARTIFACT, tmp_path, PR_DIR=str(d))
    assert rc == 1 and outputs == {}
    assert "::error::the artifact must hold model.onnx" in log
    assert "run.sh" not in log and "sub" not in log  # nothing from the artifact is echoed


def test_the_keyed_job_takes_only_the_file_the_preflight_passed(tmp_path):
    d = artifact_dir(tmp_path)
    good = hashlib.sha256(b"\x08\x07onnx-bytes").hexdigest()
    assert run_step(TAKE_FILE, tmp_path, PR_DIR=str(d), EXPECTED_SHA256=good)[0] == 0
    assert run_step(TAKE_FILE, tmp_path, PR_DIR=str(d), EXPECTED_SHA256="0" * 64)[0] != 0
    assert run_step(TAKE_FILE, tmp_path, PR_DIR=str(d), EXPECTED_SHA256="")[0] != 0
    (d / "extra").write_text("x")
    assert run_step(TAKE_FILE, tmp_path, PR_DIR=str(d), EXPECTED_SHA256=good)[0] == 1


def test_a_token_without_statuses_write_only_warns(repo, fork_run):
    repo.add_token("ghs-read", permission="read")
    fork_run.harness.token = "ghs-read"
    result = fork_run()
    assert result.exit_code == 0, result.log  # the exit code is the gate's, whatever GitHub says
    assert repo.statuses_on(REPO, HEAD) == []
    assert any("could not post the commit status" in a.message and "statuses: write" in a.message
               for a in result.annotations if a.level == "warning")


def test_commit_status_on_a_pull_request_event_goes_to_the_pull_requests_head(repo, fork_run):
    from action_harness import pull_request_event

    base = fork_run.harness.sha
    repo.set_pull_request_head(REPO, 7, HEAD)
    fork_run.harness.event = pull_request_event(REPO, 7, base, HEAD)
    fork_run.harness.event_name = "pull_request"
    fork_run.harness.sha = HEAD
    result = fork_run(**{"head-sha": None, "pr-number": None})
    assert result.exit_code == 0, result.log
    assert [s["state"] for s in repo.statuses_on(REPO, HEAD)] == ["success"]
    assert len(repo.comments_on(REPO, 7)) == 1
