"""The Action with verdicts in rounds (issue 17): a pull request's check is `pending` (commit
status and sticky comment name the round's end), and the cron job of the default branch
(`command: close-round`) releases the verdict: the commit status and the comment of that pull
request. The gate's clock is moved through the harness (HARNESS_NOW)."""
from __future__ import annotations

import json
import os

import numpy as np

import conditions
from action_harness import PR, REPO, ActionHarness, pull_request_event
from testset_files import KEY_ENV, cli, new_key, write_csv
from test_action import git
from test_action_trust import workflow_run_event
from test_labels_gate import _pair

CONDITION = "n - o > 0.1 +/- 0.1"
ROUNDS = 'rounds:\n  every: 24h\n  start: "2026-12-07T18:00:00Z"\n  labelling: 6h\n'


def git_show_bytes(ws, spec: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "-C", str(ws), "show", spec], check=True,
                          capture_output=True).stdout


def _workspace(tmp_path, rows, seed=0):
    """A git repository (base: the old model's predictions; head: the new one's) and, outside it,
    the owner's encrypted test set labelled on demand and its private sink."""
    rng = np.random.default_rng(seed)
    owner = tmp_path / "owner"
    owner.mkdir()
    truth = rng.integers(0, 2, rows)
    ids = np.array([f"row-{k}" for k in range(rows)])
    np.savez(owner / "plain.npz", X=rng.normal(size=(rows, 3)).astype(np.float32), ids=ids)
    key = new_key()
    enc = owner / "testset.enc"
    assert cli(["testset", "encrypt", str(owner / "plain.npz"), str(enc)],
               env={KEY_ENV: key}).exit_code == 0
    new, old = _pair(rng, truth, 0.4, 0.35)  # clearly above the zone: a pass once labelled
    ws = tmp_path / "ws"
    (ws / "models").mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.email", "ci@example.com")
    git(ws, "config", "user.name", "ci")
    (ws / ".easeml.yml").write_text(
        f'name: quality\ncondition: "{CONDITION}"\nreliability: 0.9\nadaptivity: full\nsteps: 3\n'
        f"private_sink: {owner / 'sink.jsonl'}\n{ROUNDS}")
    np.save(ws / "models" / "model.npy", old)
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "base")
    base = git(ws, "rev-parse", "HEAD")
    np.save(ws / "models" / "model.npy", new)
    git(ws, "commit", "-qam", "pr")
    head = git(ws, "rev-parse", "HEAD")
    return ws, base, head, enc, key, truth, ids


def test_a_pull_request_is_pending_until_the_cron_close_releases_its_verdict(gh, tmp_path):
    rows = conditions.sequential_plan(CONDITION, 0.9, "fp-free", "full", 3).rows
    ws, base, head, enc, key, truth, ids = _workspace(tmp_path, rows)
    gh.set_pull_request_head(REPO, PR, head)
    owner_config = ws / ".git" / "owner-easeml.yml"  # the owner registers under the base's terms
    owner_config.write_text(git(ws, "show", f"{base}:.easeml.yml") + "\n")
    reg = cli(["testset", "register", str(enc), "--config", str(owner_config),
               "--repository-ledger"],
              env={KEY_ENV: key, "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": "ghs-write",
                   "GITHUB_API_URL": gh.url, "EASEML_GITHUB_BACKOFF": "0.01"})
    assert reg.exit_code == 0, reg.output
    # the trusted job: the default branch's workflow_run, main checked out, the pull request's
    # model as its artifact (docs/action.md; github/policy.py refuses a keyed pull_request run)
    gh.secure(REPO)
    git(ws, "branch", "feature", head)
    git(ws, "reset", "-q", "--hard", base)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.npy").write_bytes(git_show_bytes(ws, f"{head}:models/model.npy"))
    check = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                          event=workflow_run_event(head), event_name="workflow_run", sha=base,
                          extra_env={"HARNESS_NOW": "2026-12-07T09:00:00+00:00"})
    inputs = {"new-model": str(artifact / "model.npy"),
              "old-model": f"git:{base}:models/model.npy", "testset": str(enc),
              "testset-key": key, "commit-status": "true", "head-sha": head,
              "config-from-base": "false"}
    result = check.run(inputs)
    assert result.exit_code == 0, result.log
    assert result.outputs["verdict"] == "pending"
    [status] = gh.statuses_on(REPO, head)
    assert status["state"] == "pending"
    assert status["description"].startswith(  # sealed (github/seal.py)
        "pending: verdict at the end of round 0 (2026-12-07 18:00 UTC) [seal ")
    [comment] = gh.comments_on(REPO, PR)
    assert "pending — verdict at the end of round 0 (2026-12-07 18:00 UTC)" in comment["body"]
    assert "pending" in result.summary
    again = check.run(inputs)  # a re-run of the same commit: the same pending, no step
    assert again.exit_code == 0 and again.outputs["verdict"] == "pending"
    assert again.outputs["budget-remaining"] == "2"

    records = [json.loads(line) for line in (tmp_path / "owner" / "sink.jsonl").read_text().splitlines()]
    asked = records[0]["label_request"]["row_ids"]
    index = {r: k for k, r in enumerate(ids.tolist())}
    labels = write_csv(tmp_path / "owner" / "labels.csv", ["id", "label"],
                       [[r, int(truth[index[r]])] for r in asked])
    assert cli(["testset", "label", str(enc), str(labels)], env={KEY_ENV: key}).exit_code == 0

    cron = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                         event={"schedule": "0 19 * * *", "repository": {
                             "full_name": REPO, "default_branch": "main"}},
                         event_name="schedule", sha=base,
                         extra_env={"HARNESS_NOW": "2026-12-07T19:00:00+00:00"})
    closed = cron.run({"command": "close-round", "testset": str(enc), "testset-key": key,
                       "commit-status": "true"})
    assert closed.exit_code == 0, closed.log
    assert "| 1 | 0 | #7 | pass |" in closed.summary
    statuses = gh.statuses_on(REPO, head)
    assert [s["state"] for s in statuses] == ["pending", "pending", "success"]
    [comment] = gh.comments_on(REPO, PR)  # the same sticky comment, updated
    assert "passed" in comment["body"] and "pending" not in comment["body"]
    shown = [line for line in closed.log.splitlines() if not line.startswith("::add-mask::")]
    assert not any(key in line for line in shown) and "Traceback" not in closed.log
    twice = cron.run({"command": "close-round", "testset": str(enc), "testset-key": key,
                      "commit-status": "true"})  # idempotent: nothing more is posted
    assert twice.exit_code == 0 and len(gh.statuses_on(REPO, head)) == 3
    assert "no round has ended with a pending check" in twice.summary


def _pending_pull_request(gh, tmp_path):
    """The owner registers, the pull request's check (the trusted workflow_run job, as in the
    test above) is pending; returns what the cron needs."""
    rows = conditions.sequential_plan(CONDITION, 0.9, "fp-free", "full", 3).rows
    ws, base, head, enc, key, truth, ids = _workspace(tmp_path, rows)
    gh.set_pull_request_head(REPO, PR, head)
    owner_config = ws / ".git" / "owner-easeml.yml"
    owner_config.write_text(git(ws, "show", f"{base}:.easeml.yml") + "\n")
    reg = cli(["testset", "register", str(enc), "--config", str(owner_config),
               "--repository-ledger"],
              env={KEY_ENV: key, "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": "ghs-write",
                   "GITHUB_API_URL": gh.url, "EASEML_GITHUB_BACKOFF": "0.01"})
    assert reg.exit_code == 0, reg.output
    gh.secure(REPO)
    git(ws, "branch", "feature", head)
    git(ws, "reset", "-q", "--hard", base)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.npy").write_bytes(git_show_bytes(ws, f"{head}:models/model.npy"))
    check = ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                          event=workflow_run_event(head), event_name="workflow_run", sha=base,
                          extra_env={"HARNESS_NOW": "2026-12-07T09:00:00+00:00"})
    result = check.run({"new-model": str(artifact / "model.npy"),
                        "old-model": f"git:{base}:models/model.npy", "testset": str(enc),
                        "testset-key": key, "commit-status": "true", "head-sha": head,
                        "config-from-base": "false"})
    assert result.exit_code == 0 and result.outputs["verdict"] == "pending", result.log
    return ws, base, head, enc, key, truth, ids


def _cron(gh, ws, base, at):
    return ActionHarness(ws, api_url=gh.url, token="ghs-write", repository=REPO,
                         event={"schedule": "*/30 * * * *", "repository": {
                             "full_name": REPO, "default_branch": "main"}},
                         event_name="schedule", sha=base, extra_env={"HARNESS_NOW": at})


def _label(tmp_path, enc, key, truth, ids, rows):
    index = {r: k for k, r in enumerate(ids.tolist())}
    labels = write_csv(tmp_path / "owner" / f"labels-{len(rows)}.csv", ["id", "label"],
                       [[r, int(truth[index[r]])] for r in rows])
    assert cli(["testset", "label", str(enc), str(labels)], env={KEY_ENV: key}).exit_code == 0


def test_round_requests_sends_the_next_batch_privately_and_shows_the_same_whatever_the_labels(
        gh, tmp_path):
    """The cron's round-requests before any label and after the owner labelled every row: it
    posts nothing on the pull request, its summary and exit code are the same; the private sink
    sends the next batch the first time and says "decided" the second."""
    ws, base, head, enc, key, truth, ids = _pending_pull_request(gh, tmp_path)
    summaries, messages = [], []
    for labelled in (False, True):
        if labelled:
            _label(tmp_path, enc, key, truth, ids, ids.tolist())
        before = len(gh.statuses_on(REPO, head)), [c["body"] for c in gh.comments_on(REPO, PR)]
        run = _cron(gh, ws, base, "2026-12-07T10:00:00+00:00").run(
            {"command": "round-requests", "testset": str(enc), "testset-key": key})
        assert run.exit_code == 0, run.log
        assert (len(gh.statuses_on(REPO, head)), [c["body"] for c in gh.comments_on(REPO, PR)]) \
            == before  # nothing on the pull request
        summaries.append(run.summary)
        sink = tmp_path / "owner" / "sink.jsonl"
        messages.append([json.loads(line) for line in sink.read_text().splitlines()][-1])
        shown = [line for line in run.log.splitlines() if not line.startswith("::add-mask::")]
        assert not any(key in line for line in shown) and "Traceback" not in run.log
    assert summaries[0] == summaries[1]
    assert "Label requests for 1 pending step (1) sent to the private sink." in summaries[0]
    assert messages[0]["decided"] is False and messages[0]["label_request"]["count"] > 0
    assert messages[1]["decided"] is True and "no more labels for step 1" in messages[1]["note"]


def test_a_close_that_died_before_posting_its_statuses_is_repaired_by_the_next(gh, tmp_path):
    ws, base, head, enc, key, truth, ids = _pending_pull_request(gh, tmp_path)
    _label(tmp_path, enc, key, truth, ids, ids.tolist())
    inputs = {"command": "close-round", "testset": str(enc), "testset-key": key,
              "commit-status": "true"}
    gh.fail_next("POST", r"/statuses/", status=403, times=1)  # the close's post is lost
    first = _cron(gh, ws, base, "2026-12-07T19:00:00+00:00").run(inputs)
    assert first.exit_code == 0, first.log
    assert "| 1 | 0 | #7 | pass |" in first.summary
    assert [s["state"] for s in gh.statuses_on(REPO, head)] == ["pending"]  # still pending
    second = _cron(gh, ws, base, "2026-12-07T20:00:00+00:00").run(inputs)
    assert second.exit_code == 0, second.log
    assert "| 1 | 0 | #7 | pass (status re-posted) |" in second.summary
    assert [s["state"] for s in gh.statuses_on(REPO, head)] == ["pending", "success"]
    [comment] = gh.comments_on(REPO, PR)
    assert "passed" in comment["body"]
    third = _cron(gh, ws, base, "2026-12-07T21:00:00+00:00").run(inputs)  # nothing more to repair
    assert third.exit_code == 0 and len(gh.statuses_on(REPO, head)) == 2
    assert "no round has ended with a pending check" in third.summary
