"""A ledger kept inside the GitHub repository, on a branch of its own.

Why in the repository: a runner is thrown away after each job, so a file ledger on it forgets the
budget; the repository outlives every runner and every workflow run on every pull request sees
the same branch.

Layout: branch ``easeml-ledger`` (configurable), created as an orphan branch holding only a
README, then one file ``ledger/<fingerprint>.jsonl`` per test set, one hash-chained entry per line
(the same canonical JSON as the file backend).

Compare-and-swap: an append reads the file (its content and blob ``sha``), checks that it holds
exactly ``expected_length`` entries, and writes the new content through the contents API with
that ``sha``. GitHub refuses the write with 409 when the file changed in between (or 422 when a
file appeared that we believed absent), which becomes :class:`LedgerConflict`; the
:class:`~easeml_ci.ledger.Ledger` reloads and retries. So two workflow runs on different pull
requests can never both spend step k. The write is a commit on the branch: once ``PUT`` has
answered, the step is durable and the verdict may be revealed (commit, then reveal).

A token that may not write (a pull request from a fork, or a workflow without
``permissions: contents: write``) gets 403; that becomes :class:`LedgerWriteDenied`, a
:class:`LedgerCorrupt` with exit code 2: the check stops before deciding anything, so nothing is
revealed, and the message says which permission is missing. A 403 that is one of GitHub's rate
limits is not a missing permission: the client waits it out within a bound
(:mod:`easeml_ci.http`), and when it outlasts the bound the message says "rate limit" and
"run again later", never "permission".

Retried writes. The ``PUT`` is idempotent under its ``sha``: the HTTP policy retries it after a
5xx, and when the first try had landed the retry meets a stale ``sha`` (409), which becomes a
conflict and the step is recorded again. That costs a step; it never reveals an uncounted bit.
(Reading the file back to recognise "our" write would not be sound: two writers in the same
second can seal byte-identical entries.)

Truncation and rollback. A MAC chain (:mod:`.auth`) cannot show a cut-off tail: a prefix of an
authentic ledger is authentic. Here the branch history is the witness: every append is one
commit whose message records the test set, the new length and the last entry's hash (a *claim*,
tagged ``v2`` for an authenticated ledger), and :meth:`history_problems` reads the claims of
**every** commit reachable from the branch (never only the latest message, which anybody who may
push can write: attack 2 of issue 20 was a fast-forward commit that kept only the registration
and forged that message). The ledger must hold every entry any claim records, with that hash;
a commit that cut the file back, or a merge that took an older copy, leaves the claims of the
gate's later commits in the history and is refused (exit 2). A forged claim can only make the
gate refuse, never add steps. What the history cannot show is a force-push or a deleted and
re-created branch (the claims go with the old history): :meth:`check_protected` refuses a ledger
branch that no ruleset keeps from force pushes and deletion, and the registration anchor on the
default branch (:meth:`write_anchor`, ``.easeml/registrations/<fingerprint>.json``) turns a
ledger that disappeared into "ledger missing", never "not registered yet".

Files over 1 MB: the contents API then answers with ``encoding: "none"`` and an empty
``content``; read naively that would be an empty ledger, i.e. a fresh budget. The file is then
read through the git blobs API (up to 100 MB, the contents API's own write limit) by the blob
sha the contents API gave, and its size is checked against the one reported: anything that
does not add up is :class:`LedgerCorrupt`, never an empty or shorter ledger.
"""
from __future__ import annotations

import base64
import json
import os
import re

from ..github.api import (
    GitHubClient,
    GitHubConflict,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubValidation,
    repo_path,
    write_once,
)
from .chain import canonical, parse_lines
from .errors import LedgerConflict, LedgerCorrupt

DEFAULT_BRANCH = "easeml-ledger"
DEFAULT_DIRECTORY = "ledger"
_FINGERPRINT = re.compile(r"^[0-9a-f]{16,128}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_HEAD_RECORD = re.compile(r"^easeml-ci: ledger ([0-9a-f]+) entry (\d+) hash=([0-9a-f]{64})( v2)?$",
                          re.MULTILINE)
ANCHOR_DIRECTORY = ".easeml/registrations"
ANCHOR_FORMAT = 1

_README = """# easeml-ci ledger

This branch is written by easeml-ci. Each file under `ledger/` is the append-only, hash-chained
budget ledger of one test set (named by its fingerprint). Do not edit it by hand: `easeml-ci
ledger verify` detects any change, and the branch history keeps every step.
"""


class LedgerWriteDenied(LedgerCorrupt):
    """The token cannot write the ledger branch: the step cannot be recorded, so nothing is shown."""


class GitHubBackend:
    """Ledger entries in ``<directory>/<fingerprint>.jsonl`` on ``branch`` of ``repository``."""

    name = "github"

    def __init__(self, repository: str | None = None, branch: str = DEFAULT_BRANCH,
                 directory: str = DEFAULT_DIRECTORY, *, token: str | None = None,
                 api_url: str | None = None, client: GitHubClient | None = None):
        repository = repository or os.environ.get("GITHUB_REPOSITORY")
        if not repository or not _REPOSITORY.match(repository):
            raise LedgerCorrupt(
                f"ledger.repository must be OWNER/NAME, got {repository!r} "
                "(set it in .easeml.yml or run inside GitHub Actions, which sets GITHUB_REPOSITORY)")
        if not branch or any(c in branch for c in " ~^:?*[\\") or branch.startswith("-"):
            raise LedgerCorrupt(f"ledger.branch is not a valid branch name: {branch!r}")
        self.repository = repository
        self.branch = branch
        self.directory = directory.strip("/") or DEFAULT_DIRECTORY
        if client is None:
            token = token or os.environ.get("GITHUB_TOKEN") or os.environ.get("INPUT_GITHUB_TOKEN")
            if not token:
                raise LedgerCorrupt(
                    "ledger backend 'github' needs a token: set GITHUB_TOKEN (in the action: "
                    "the github-token input)")
            client = GitHubClient(token, api_url)
        self.client = client

    @classmethod
    def from_spec(cls, spec: dict, **kwargs) -> "GitHubBackend":
        """Build from the config's ``ledger:`` mapping (keys repository, branch, path)."""
        return cls(repository=spec.get("repository"), branch=spec.get("branch") or DEFAULT_BRANCH,
                   directory=spec.get("path") or DEFAULT_DIRECTORY, **kwargs)

    def __repr__(self) -> str:
        return f"GitHubBackend({self.repository!r}, branch={self.branch!r})"

    @property
    def where(self) -> str:
        return f"{self.repository}@{self.branch}"

    # --- paths ---------------------------------------------------------------------------
    def _file(self, fingerprint: str) -> str:
        if not _FINGERPRINT.match(fingerprint):
            raise LedgerCorrupt(f"ledger: fingerprint {fingerprint!r} is not a lowercase hex digest")
        return f"{self.directory}/{fingerprint}.jsonl"

    def _contents(self, path: str) -> str:
        return repo_path(self.repository, "contents", path)

    # --- reading -------------------------------------------------------------------------
    def _read(self, fingerprint: str) -> tuple[list[dict], bytes, str | None]:
        """(entries, raw bytes, blob sha) — sha None when the file or branch does not exist."""
        path = self._file(fingerprint)
        try:
            doc = self.client.get(self._contents(path), ref=self.branch)
        except GitHubNotFound:
            return [], b"", None
        except GitHubForbidden as exc:
            raise LedgerCorrupt(
                f"ledger: cannot read {path} on {self.where}: HTTP {exc.status} {exc.api_message} "
                "(the token needs contents: read)") from None
        except GitHubError as exc:
            raise self._unavailable(f"read {path}", exc) from None
        if not isinstance(doc, dict) or doc.get("type") != "file":
            raise LedgerCorrupt(f"ledger: {path} on {self.where} is not a file")
        sha, size = doc.get("sha"), doc.get("size")
        if doc.get("encoding") == "base64":
            data = base64.b64decode(doc.get("content") or "")
        else:  # over 1 MB: content is not inline
            data = self._blob(path, sha)
        if not isinstance(size, int) or len(data) != size:
            raise LedgerCorrupt(f"ledger: {path} on {self.where}: read {len(data)} bytes, GitHub reports "
                                f"{size!r}; refusing to count the budget from a partial ledger")
        return parse_lines(data), data, sha

    def _blob(self, path: str, sha) -> bytes:
        """A ledger file too large for the contents API, by its blob sha (git blobs: up to 100 MB)."""
        if not isinstance(sha, str) or not sha:
            raise LedgerCorrupt(f"ledger: {path} on {self.where}: GitHub sent no content and no blob sha")
        try:
            blob = self.client.get(repo_path(self.repository, "git", "blobs", sha))
        except GitHubError as exc:
            raise self._unavailable(f"read {path} (blob {sha[:12]})", exc) from None
        if not isinstance(blob, dict) or blob.get("encoding") != "base64":
            raise LedgerCorrupt(f"ledger: {path} (blob {sha[:12]}) on {self.where}: unexpected blob encoding "
                                f"{blob.get('encoding') if isinstance(blob, dict) else blob!r}")
        return base64.b64decode(blob.get("content") or "")

    def load(self, fingerprint: str) -> list[dict]:
        """All entries, oldest first; [] when the branch or the file does not exist yet."""
        return self._read(fingerprint)[0]

    def head(self, fingerprint: str) -> dict | None:
        """``{"length", "hash"}`` from the latest commit that changed the ledger file.

        None when the file was never written. When that commit was not made by easeml-ci (its
        message lacks the record), the head is reported unreadable, which ``verify`` flags.
        """
        path = self._file(fingerprint)
        try:
            commits = self.client.get(repo_path(self.repository, "commits"), sha=self.branch,
                                      path=path, per_page=1)
        except (GitHubNotFound, GitHubValidation):
            return None
        except GitHubError as exc:
            raise self._unavailable(f"read the history of {path}", exc) from None
        if not commits:
            return None
        message = str((commits[0].get("commit") or {}).get("message", ""))
        m = _HEAD_RECORD.search(message)
        if not m:
            return {"length": None, "hash": None, "unreadable": True}
        return {"length": int(m.group(2)), "hash": m.group(3)}

    # --- the history and the anchor: what an ordinary push cannot undo ---------------------
    def claims(self, fingerprint: str) -> list[tuple[str, int, str, bool]]:
        """(commit sha, length, hash, v2) of every commit reachable from the branch whose
        message claims an append to this test set's ledger, newest first."""
        try:
            commits = list(self.client.paginate(repo_path(self.repository, "commits"),
                                                sha=self.branch, per_page=100))
        except (GitHubNotFound, GitHubValidation):
            return []
        except GitHubError as exc:
            raise self._unavailable("read the ledger branch's history", exc) from None
        out = []
        for commit in commits:
            message = str(((commit or {}).get("commit") or {}).get("message", ""))
            for m in _HEAD_RECORD.finditer(message):
                named = m.group(1)
                if named == fingerprint or (len(named) == 12 and fingerprint.startswith(named)):
                    out.append((str(commit.get("sha", "")), int(m.group(2)), m.group(3),
                                bool(m.group(4))))
        return out

    def history_problems(self, fingerprint: str, entries: list[dict]) -> list[str]:
        """What the branch's history and the registration anchor say is missing from
        ``entries`` (called by :class:`~easeml_ci.ledger.Ledger` on every verified read)."""
        from .auth import is_v1

        problems = []
        claims = self.claims(fingerprint)
        anchored = self.anchor(fingerprint)
        if anchored is not None:
            registered = anchored.get("register") or {}
            if not entries:
                problems.append(
                    f"ledger missing: test set {fingerprint[:12]} is registered (anchor "
                    f"{self._anchor_file(fingerprint)} on the default branch) but {self.where} "
                    "holds no ledger for it (the branch or the file was deleted); restore the "
                    "ledger branch, nothing is decided until then")
            elif (entries[0].get("hash") != registered.get("hash")
                  or entries[0].get("mac") != registered.get("mac")):
                problems.append(
                    f"entry 1: not the registration anchored on the default branch "
                    f"({self._anchor_file(fingerprint)}): the ledger was re-created")
            elif anchored.get("ledger_commit") and anchored["ledger_commit"] not in {
                    sha for sha, *_ in claims}:
                problems.append(
                    f"the ledger branch {self.where} was re-created: the commit that registered "
                    f"test set {fingerprint[:12]} ({anchored['ledger_commit'][:12]}, anchored on "
                    "the default branch) is not in its history")
        v1 = is_v1(entries)
        for sha, length, last_hash, v2 in claims:
            sha = sha[:12]
            if v1 and v2:
                problems.append(f"commit {sha} appended to an authenticated (v2) ledger of this "
                                "test set, which now reads as v1: its MACs were stripped")
                break
            if v2 == v1:
                continue  # a v1 claim of a migrated ledger, or a v2 one of a v1 ledger: moot
            if len(entries) < length:
                problems.append(
                    f"rolled back: commit {sha} wrote entry {length}, the ledger now holds "
                    f"{len(entries)} (a commit easeml-ci did not make cut it back)")
                break
            if entries[length - 1].get("hash") != last_hash:
                problems.append(f"entry {length}: differs from the one commit {sha} wrote "
                                "(rewritten)")
                break
        return problems

    def _anchor_file(self, fingerprint: str) -> str:
        self._file(fingerprint)  # the same check of the name
        return f"{ANCHOR_DIRECTORY}/{fingerprint}.json"

    def default_branch(self) -> str:
        if getattr(self, "_default_branch", None) is None:
            try:
                repo = self.client.get(repo_path(self.repository))
            except GitHubError as exc:
                raise self._unavailable("read the repository's default branch", exc) from None
            self._default_branch = str((repo or {}).get("default_branch") or "main")
        return self._default_branch

    def anchor(self, fingerprint: str) -> dict | None:
        """The registration anchor on the default branch (where a pull request cannot remove
        it), or None. Unreadable or malformed anchors refuse (exit 2)."""
        path = self._anchor_file(fingerprint)
        try:
            doc = self.client.get(self._contents(path), ref=self.default_branch())
        except GitHubNotFound:
            return None
        except GitHubError as exc:
            raise self._unavailable(f"read the registration anchor {path}", exc) from None
        try:
            anchored = json.loads(base64.b64decode((doc or {}).get("content") or ""))
            if not isinstance(anchored, dict) or anchored.get("fingerprint") != fingerprint:
                raise ValueError
        except ValueError:
            raise LedgerCorrupt(f"ledger: the registration anchor {path} on the default branch "
                                "is not one easeml-ci wrote; nothing was decided") from None
        return anchored

    def write_anchor(self, fingerprint: str, register_entry: dict) -> str:
        """Commit the registration anchor (the register entry with its MAC) to the default
        branch; returns where. An anchor that is already there must be this registration."""
        path = self._anchor_file(fingerprint)
        existing = self.anchor(fingerprint)
        if existing is not None:
            if (existing.get("register") or {}).get("hash") == register_entry.get("hash"):
                return f"{self.repository}@{self.default_branch()}/{path}"
            raise LedgerCorrupt(f"ledger: {path} on the default branch anchors another "
                                "registration of this test set; nothing was written")
        registered_by = next((sha for sha, length, last_hash, _v2 in self.claims(fingerprint)
                              if length == 1 and last_hash == register_entry.get("hash")), None)
        body = {"message": f"easeml-ci: anchor the registration of test set {fingerprint[:12]}",
                "content": base64.b64encode(canonical({
                    "format": ANCHOR_FORMAT, "fingerprint": fingerprint, "ledger": self.where,
                    "ledger_commit": registered_by, "register": register_entry}) + b"\n"
                ).decode(),
                "branch": self.default_branch()}
        try:
            self.client.put(self._contents(path), body)
        except GitHubForbidden as exc:
            raise LedgerWriteDenied(
                f"ledger: cannot commit the registration anchor {path} to the default branch "
                f"{self.default_branch()}: HTTP {exc.status} {exc.api_message} (the owner's "
                "token needs contents: write there; rerun `easeml-ci ledger anchor`)") from None
        except GitHubError as exc:
            raise self._unavailable(f"commit the registration anchor {path}", exc) from None
        return f"{self.repository}@{self.default_branch()}/{path}"

    def check_protected(self) -> None:
        """Refuse (exit 2, before anything is opened) a ledger branch whose history is not
        append-only: without rules against force pushes and deletion, the gate's commits (the
        claims :meth:`history_problems` reads) could be taken away, and spent steps with them.
        The one check of those rules: :func:`easeml_ci.github.policy.check_ledger_branch_protected`."""
        from ..github.policy import check_ledger_branch_protected

        check_ledger_branch_protected(self.client, self.repository, self.branch)

    def integrity_warnings(self) -> list[str]:
        """What ``verify`` cannot see in the ledger itself: a branch that can be force-pushed
        back to an older state or deleted and re-created leaves a consistent, shorter ledger,
        and nothing in the branch shows it (the same check as :meth:`check_protected`, as a
        warning)."""
        from ..github.policy import UnsafeSetting, check_ledger_branch_protected

        try:
            check_ledger_branch_protected(self.client, self.repository, self.branch)
        except UnsafeSetting as exc:
            return [exc.message.removesuffix("; nothing was opened")]
        return []

    def fingerprints(self) -> list[str]:
        try:
            listing = self.client.get(self._contents(self.directory), ref=self.branch)
        except GitHubNotFound:
            return []
        except GitHubError as exc:
            raise self._unavailable(f"list {self.directory}/", exc) from None
        if not isinstance(listing, list):
            return []
        out = []
        for item in listing:
            name = str(item.get("name", ""))
            if name.endswith(".jsonl") and _FINGERPRINT.match(name[:-6]):
                out.append(name[:-6])
        return sorted(out)

    # --- writing -------------------------------------------------------------------------
    def _denied(self, exc: GitHubError) -> LedgerWriteDenied:
        return LedgerWriteDenied(
            f"ledger: cannot record the step on {self.where}: HTTP {exc.status} "
            f"{exc.api_message} — the token needs 'permissions: contents: write' (pull requests "
            "from forks get a read-only token); nothing was revealed")

    def _unavailable(self, doing: str, exc: GitHubError) -> LedgerCorrupt:
        """GitHub did not serve the ledger: a rate limit says so, and is never a permission.

        The check stops before deciding anything, so nothing is revealed either way.
        """
        if isinstance(exc, GitHubRateLimited):
            return LedgerCorrupt(f"ledger: cannot {doing} on {self.where}: {exc.advice()} "
                                 f"(HTTP {exc.status} {exc.api_message}); nothing was revealed")
        return LedgerCorrupt(f"ledger: cannot {doing} on {self.where}: {exc}; nothing was revealed")

    def _branch_exists(self) -> dict | None:
        try:
            return self.client.get(repo_path(self.repository, "git", "ref", f"heads/{self.branch}"))
        except GitHubNotFound:
            return None

    def _create_branch(self) -> dict:
        tree = self.client.post(repo_path(self.repository, "git", "trees"), {
            "tree": [{"path": "README.md", "mode": "100644", "type": "blob", "content": _README}]})
        commit = self.client.post(repo_path(self.repository, "git", "commits"), {
            "message": "easeml-ci: start the ledger branch", "tree": tree["sha"], "parents": []})
        return self.client.post(repo_path(self.repository, "git", "refs"), {
            "ref": f"refs/heads/{self.branch}", "sha": commit["sha"]})

    def ensure_branch(self) -> None:
        """Create the ledger branch as an orphan commit holding a README, unless it exists.

        An ambiguous failure of the creating POSTs looks for the branch before creating again
        (an unreferenced tree or commit left by the first try is harmless).
        """
        try:
            if self._branch_exists() is not None:
                return
            write_once(self.client, self._create_branch, self._branch_exists)
        except GitHubForbidden as exc:
            raise self._denied(exc) from None
        except GitHubValidation as exc:
            if "already exists" not in exc.api_message:  # a concurrent run created it first
                raise LedgerCorrupt(f"ledger: cannot create branch {self.where}: {exc}") from None
        except GitHubError as exc:
            raise self._unavailable("create the ledger branch", exc) from None

    def check_writable(self) -> None:
        """Fail now, before a test set is opened, when the token could not record a step.

        Asks for an update of the ledger branch's README (or, before the branch exists, of a
        file on the default branch) with a sha that cannot match: a token that may write gets
        409 Conflict (or 422) and nothing changes; a read-only token gets 403. Creates nothing.
        """
        body = {"message": "easeml-ci: write probe (never applied)", "sha": "0" * 40,
                "content": base64.b64encode(_README.encode()).decode()}
        try:
            self.client.get(repo_path(self.repository, "git", "ref", f"heads/{self.branch}"))
            body["branch"] = self.branch
        except GitHubNotFound:
            pass  # no ledger branch yet: probe the default branch instead
        except GitHubError as exc:
            raise LedgerCorrupt(f"ledger: cannot read {self.where}: {exc}; nothing was opened"
                                ) from None
        try:
            self.client.put(self._contents("README.md"), body)
        except GitHubForbidden as exc:
            raise self._denied(exc) from None
        except (GitHubConflict, GitHubValidation, GitHubNotFound):
            return  # allowed to write; the stale sha stopped the probe, as intended
        except GitHubError as exc:
            raise LedgerCorrupt(f"ledger: cannot tell whether the token may write {self.where}: "
                                f"{exc}; nothing was opened") from None

    def append(self, fingerprint: str, entry: dict, expected_length: int) -> None:
        """Append ``entry`` iff the stored ledger holds exactly ``expected_length`` entries.

        Durable (a commit on the branch) before returning; :class:`LedgerConflict` when another
        writer got there first, in which case nothing was written.
        """
        path = self._file(fingerprint)
        entries, data, sha = self._read(fingerprint)
        if len(entries) != expected_length:
            raise LedgerConflict(expected_length, len(entries))
        if sha is None:
            self.ensure_branch()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        new = data + canonical(entry) + b"\n"
        body = {
            "message": self._claim(fingerprint, expected_length + 1, entry),
            "content": base64.b64encode(new).decode(),
            "branch": self.branch,
        }
        if sha is not None:
            body["sha"] = sha
        try:
            self.client.put(self._contents(path), body)
        except (GitHubConflict, GitHubValidation) as exc:
            if isinstance(exc, GitHubValidation) and "sha" not in exc.api_message.lower():
                raise LedgerCorrupt(f"ledger: GitHub refused the write to {path}: {exc}") from None
            raise LedgerConflict(expected_length, self._length_now(fingerprint, expected_length + 1)) from None
        except GitHubForbidden as exc:
            raise self._denied(exc) from None
        except GitHubNotFound as exc:  # branch deleted between ensure_branch and PUT
            raise LedgerConflict(expected_length, -1) from exc
        except GitHubError as exc:
            raise self._unavailable("record the step", exc) from None

    @staticmethod
    def _claim(fingerprint: str, length: int, entry: dict) -> str:
        """The commit message that records an append (see the module docstring)."""
        tag = " v2" if "mac" in entry else ""
        return f"easeml-ci: ledger {fingerprint} entry {length} hash={entry.get('hash')}{tag}"

    def rewrite(self, fingerprint: str, entries: list[dict], expected_length: int) -> None:
        """Replace the ledger file in one commit (``ledger migrate`` only), iff it holds
        ``expected_length`` entries; the commit claims the new length."""
        path = self._file(fingerprint)
        current, _data, sha = self._read(fingerprint)
        if sha is None or len(current) != expected_length:
            raise LedgerConflict(expected_length, len(current))
        body = {"message": self._claim(fingerprint, len(entries), entries[-1]) + "\n\nmigrated",
                "content": base64.b64encode(b"".join(canonical(e) + b"\n" for e in entries)
                                            ).decode(),
                "branch": self.branch, "sha": sha}
        try:
            self.client.put(self._contents(path), body)
        except (GitHubConflict, GitHubValidation):
            raise LedgerConflict(expected_length, -1) from None
        except GitHubForbidden as exc:
            raise self._denied(exc) from None
        except GitHubError as exc:
            raise self._unavailable("rewrite the ledger", exc) from None

    def _length_now(self, fingerprint: str, fallback: int) -> int:
        try:
            return len(self._read(fingerprint)[0])
        except LedgerCorrupt:
            return fallback


def open_backend(spec: dict, *, base=None, **kwargs) -> GitHubBackend:
    """Entry point used by :func:`easeml_ci.ledger.open_backend` for ``backend: github``."""
    return GitHubBackend.from_spec(spec, **kwargs)
