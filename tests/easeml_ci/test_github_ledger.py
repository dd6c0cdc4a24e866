"""The ledger backend inside the GitHub repository, against the fake GitHub API."""
from __future__ import annotations

import json
import threading

import pytest

from easeml_ci.github.api import GitHubClient
from easeml_ci.http import GitHubRetry
from easeml_ci.ledger import Ledger, LedgerConflict, LedgerCorrupt, open_backend
from easeml_ci.ledger.github_backend import GitHubBackend, LedgerWriteDenied
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402

REPO = "acme/models"
FP = "ab" * 32
TERMS = {"condition": "n > 0.8 +/- 0.05", "reliability": 0.999, "mode": "fp-free",
         "adaptivity": "full", "steps": 3, "passes": None}


def backend(fake, token="tok-write", **kw):
    client = GitHubClient(token, fake.url, policy=GitHubRetry(2, sleep=lambda s: None))
    return GitHubBackend(REPO, client=client, **kw)


@pytest.fixture
def repo(fake_github):
    fake_github.add_repo(REPO)
    fake_github.add_token("tok-write")
    fake_github.add_token("tok-read", permission="read")
    return fake_github


def test_first_append_creates_an_orphan_branch_and_the_file(repo):
    b = backend(repo)
    assert b.load(FP) == []
    b.append(FP, {"kind": "register", "x": 1}, 0)
    raw = repo.file_on_branch(REPO, "easeml-ledger", f"ledger/{FP}.jsonl")
    assert [json.loads(line) for line in raw.splitlines()] == [{"kind": "register", "x": 1}]
    assert repo.file_on_branch(REPO, "easeml-ledger", "README.md").startswith(b"# easeml-ci ledger")
    # orphan: the ledger branch does not carry the default branch's files
    assert repo.file_on_branch(REPO, "easeml-ledger", "README.md") != b"# fake\n"
    assert b.load(FP) == [{"kind": "register", "x": 1}]
    assert b.fingerprints() == [FP]


def test_append_with_a_stale_length_is_a_conflict_and_writes_nothing(repo):
    b = backend(repo)
    b.append(FP, {"n": 0}, 0)
    with pytest.raises(LedgerConflict):
        b.append(FP, {"n": "late"}, 0)
    assert b.load(FP) == [{"n": 0}]


def test_stale_sha_on_put_becomes_a_conflict(repo):
    """A writer that read version 1 before another wrote version 2: GitHub's 409 on its PUT
    (stale blob sha) is a LedgerConflict, and nothing of it is written.

    The interleaving is fixed by hand (the second writer's first read is the one taken before
    the first writer's append), not by timing threads against the fake server: under load a
    barrier timeout let the second read happen late, and the conflict came from the length
    check instead of the PUT.
    """
    b1, b2 = backend(repo), backend(repo)
    b1.append(FP, {"n": 0}, 0)
    stale = b2._read(FP)
    b1.append(FP, {"n": "a"}, 1)
    reads = iter([stale])
    real_read = b2._read
    b2._read = lambda fp: next(reads, None) or real_read(fp)
    with pytest.raises(LedgerConflict) as info:
        b2.append(FP, {"n": "b"}, 1)
    assert [r.status for r in repo.calls("PUT", FP)][-1] == 409
    assert info.value.actual == 2
    assert b1.load(FP) == [{"n": 0}, {"n": "a"}]


def test_ledger_never_spends_a_step_twice_across_concurrent_writers(repo):
    ledgers = [Ledger(backend(repo), FP, LEDGER_KEY) for _ in range(6)]
    out, spent = [], []

    def run(ledger):
        from easeml_ci.ledger import LedgerSpent
        try:
            entry, _ = ledger.record_step(passed=False, terms=TERMS)
            out.append(entry["seq"])
        except LedgerSpent:
            spent.append(1)

    threads = [threading.Thread(target=run, args=(lg,)) for lg in ledgers]
    [t.start() for t in threads]
    [t.join() for t in threads]
    entries = Ledger(backend(repo), FP, LEDGER_KEY).entries()
    steps = [e for e in entries if e["kind"] == "step"]
    assert len(steps) == 3 and len(out) == 3 and len(spent) == 3
    assert len(set(out)) == 3
    assert Ledger(backend(repo), FP, LEDGER_KEY).verify().ok


def test_read_only_token_cannot_record_and_says_why(repo):
    b = backend(repo, token="tok-read")
    assert b.load(FP) == []  # reading is allowed
    with pytest.raises(LedgerWriteDenied) as info:
        b.append(FP, {"n": 0}, 0)
    assert info.value.exit_code == 2
    assert "contents: write" in info.value.message and "nothing was revealed" in info.value.message
    assert repo.file_on_branch(REPO, "easeml-ledger", f"ledger/{FP}.jsonl") is None


def test_a_502_once_is_retried(repo):
    b = backend(repo)
    repo.fail_next("PUT", r"/contents/", 502)
    b.append(FP, {"n": 0}, 0)
    assert b.load(FP) == [{"n": 0}]
    assert [r.status for r in repo.calls("PUT")] == [502, 201]


def test_open_backend_reads_the_config_mapping(repo, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "tok-write")
    monkeypatch.setenv("GITHUB_API_URL", repo.url)
    b = open_backend({"backend": "github", "repository": REPO, "branch": "budget"})
    assert isinstance(b, GitHubBackend) and b.branch == "budget"
    b.append(FP, {"n": 0}, 0)
    assert repo.file_on_branch(REPO, "budget", f"ledger/{FP}.jsonl") is not None


@pytest.mark.parametrize("spec, env, needle", [
    ({"backend": "github", "repository": "no-slash"}, {"GITHUB_TOKEN": "t"}, "OWNER/NAME, got 'no-slash'"),
    ({"backend": "github", "repository": REPO}, {}, "needs a token"),
    ({"backend": "github", "repository": REPO, "branch": "a b"}, {"GITHUB_TOKEN": "t"}, "branch"),
])
def test_bad_backend_settings_are_one_line_errors(spec, env, needle, monkeypatch):
    for k in ("GITHUB_TOKEN", "INPUT_GITHUB_TOKEN", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LedgerCorrupt) as info:
        open_backend(spec)
    assert needle in info.value.message and info.value.exit_code == 2


def test_verify_sees_edits_and_a_tail_cut_off_by_a_commit_outside_easeml_ci(repo):
    ledger = Ledger(backend(repo), FP, LEDGER_KEY)
    for _ in range(3):
        ledger.record_step(passed=False, terms=TERMS)
    report = ledger.verify()
    assert report.ok, report.problems
    path = f"ledger/{FP}.jsonl"
    raw = repo.file_on_branch(REPO, "easeml-ledger", path)
    lines = raw.splitlines(keepends=True)
    # a person drops the last step through the web UI: the chain alone would still be valid
    repo.commit_file(REPO, "easeml-ledger", path, b"".join(lines[:-1]))
    assert not ledger.verify().ok
    # a person edits an entry, keeping the length
    edited = lines[1].replace(b'"passed":false', b'"passed":true')
    repo.commit_file(REPO, "easeml-ledger", path, lines[0] + edited + b"".join(lines[2:]))
    problems = " ".join(ledger.verify().problems)
    assert "edited" in problems


def test_a_ledger_over_the_inline_limit_is_read_whole_through_the_blob_api(repo):
    # GitHub stops returning content inline over 1 MB (encoding "none", content ""); read that
    # way the ledger would look empty and the budget fresh. The fake's limit is lowered here.
    b = backend(repo)
    for i in range(8):
        b.append(FP, {"n": i, "pad": "x" * 200}, i)
    repo.inline_limit = 1000
    assert len(repo.file_on_branch(REPO, "easeml-ledger", f"ledger/{FP}.jsonl")) > 1000
    assert [e["n"] for e in b.load(FP)] == list(range(8))
    assert repo.calls("GET", r"/git/blobs/")
    b.append(FP, {"n": 8}, 8)  # the compare-and-swap still holds on the blob sha
    with pytest.raises(LedgerConflict):
        b.append(FP, {"n": "late"}, 8)
    assert [e["n"] for e in b.load(FP)] == list(range(9))


def test_a_ledger_that_does_not_add_up_is_refused_not_read_as_shorter(repo, monkeypatch):
    b = backend(repo)
    for i in range(3):
        b.append(FP, {"n": i}, i)
    real_get = b.client.get

    def truncated(endpoint, **params):  # GitHub sends less than it says the file holds
        doc = real_get(endpoint, **params)
        if "/contents/" in endpoint and isinstance(doc, dict):
            doc = dict(doc, size=doc["size"] + 10)
        return doc

    monkeypatch.setattr(b.client, "get", truncated)
    with pytest.raises(LedgerCorrupt, match="refusing to count the budget from a partial ledger"):
        b.load(FP)
    monkeypatch.setattr(b.client, "get", real_get)
    repo.inline_limit = 10
    monkeypatch.setattr(b, "_blob", lambda path, sha: b"")  # the blob read came back empty
    with pytest.raises(LedgerCorrupt, match="read 0 bytes"):
        b.load(FP)


def test_verify_warns_while_the_ledger_branch_can_be_force_pushed_or_deleted(repo):
    # A force-push back to an older state is invisible in the ledger itself (a shorter, valid
    # chain with a matching head): verify says so until rules block it (the same check as the
    # gate's check_protected, github/policy.py, as a warning).
    ledger = Ledger(backend(repo), FP, LEDGER_KEY)
    ledger.record_step(passed=False, terms=TERMS)
    gh = repo.repos[REPO]
    gh.rules.clear()  # no ruleset (the gate itself refuses such a branch: check_protected)
    report = ledger.verify()
    assert report.ok and any("can be force-pushed and deleted" in w for w in report.warnings)
    gh.rules["easeml-ledger"] = [{"type": "deletion"}]  # a ruleset that does not block force pushes
    assert any("can be force-pushed:" in w for w in ledger.verify().warnings)
    gh.rules["easeml-ledger"] = [{"type": "deletion"}, {"type": "non_fast_forward"}]
    assert not [w for w in ledger.verify().warnings if "force" in w]
    gh.rules.clear()
    repo.protect(REPO, "easeml-ledger")  # classic branch protection, force pushes and deletion off
    # ... counts only where the token may read its settings (Administration: read)
    assert any("Administration: read" in w for w in ledger.verify().warnings)
    repo.add_token("tok-admin", installation=False, admin=True)
    admin = Ledger(backend(repo, "tok-admin"), FP, LEDGER_KEY)
    assert not [w for w in admin.verify().warnings if "force" in w]


# --- the HTTP policy under the ledger: rate limits are not permissions, creations not doubled ----
def test_a_secondary_rate_limit_is_waited_out_not_blamed_on_permissions(repo):
    slept = []
    b = GitHubBackend(REPO, client=GitHubClient("tok-write", repo.url, sleep=slept.append))
    repo.rate_limit_next("GET", r"/contents/", "secondary")  # 403, no retry-after
    repo.rate_limit_next("PUT", r"/contents/", "secondary", status=429)
    b.append(FP, {"n": 0}, 0)
    assert b.load(FP) == [{"n": 0}] and slept == [60.0, 60.0]


@pytest.mark.parametrize("method, path, call", [
    ("GET", r"/contents/", lambda b: b.load(FP)),
    ("PUT", r"/contents/", lambda b: b.append(FP, {"n": 0}, 0)),
    ("POST", r"/git/trees$", lambda b: b.append(FP, {"n": 0}, 0)),
])
def test_a_rate_limit_that_outlasts_the_bound_stops_the_check_and_says_so(repo, method, path, call):
    slept = []
    b = GitHubBackend(REPO, client=GitHubClient("tok-write", repo.url, sleep=slept.append,
                                                clock=lambda: 1000.0))
    repo.rate_limit_next(method, path, "primary", reset=1000 + 3600)
    with pytest.raises(LedgerCorrupt) as info:
        call(b)
    assert not isinstance(info.value, LedgerWriteDenied) and info.value.exit_code == 2
    msg = info.value.message
    assert "primary rate limit" in msg and "run again later" in msg and "3601 s" in msg
    assert "permission" not in msg and "contents: write" not in msg and slept == []
    assert repo.file_on_branch(REPO, "easeml-ledger", f"ledger/{FP}.jsonl") is None


def test_the_ledger_branch_is_created_once_when_its_ref_post_fails_ambiguously(repo):
    b = backend(repo)
    repo.fail_next("POST", r"/git/refs$", 502, after=True)  # created, then 502
    b.append(FP, {"n": 0}, 0)
    assert [r.status for r in repo.calls("POST", r"/git/refs$")] == [502]
    assert b.load(FP) == [{"n": 0}]
