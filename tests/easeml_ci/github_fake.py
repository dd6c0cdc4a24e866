"""A fake GitHub REST API on 127.0.0.1 for the action's tests.

It records every request and answers like GitHub does for the endpoints the action uses:

* ``GET /user`` (403 for installation tokens such as the workflow's ``GITHUB_TOKEN``),
* ``GET /repos/O/R``,
* issues: list (``state``, ``labels``, pagination with ``Link``), create, update,
* issue comments: list (paginated), create, update,
* git data for the ledger branch: ``GET git/ref/heads/B``, ``POST git/refs``, ``POST git/trees``,
  ``POST git/commits``, ``PATCH git/refs/heads/B`` (fast-forward only unless ``force``, and
  never under a ``non_fast_forward`` rule) and ``DELETE git/refs/heads/B`` (422 under a
  ``deletion`` rule),
* ``GET commits?sha=B`` (every commit reachable, with its parents; with ``path``, the first-parent
  commits that changed it),
* contents: ``GET`` (base64 + blob ``sha``; over ``inline_limit`` bytes, 1 MB as on GitHub,
  ``encoding: "none"`` and empty ``content``) and ``PUT`` with the ``sha`` compare-and-swap
  (409 on a stale sha, 422 when a file exists and no sha is given, 404 on a missing branch),
* ``GET git/blobs/SHA`` (base64, any size),
* ``GET branches/B`` (``protected``) and ``GET rules/branches/B`` (the rules of active rulesets,
  which apply to a branch whether it exists or not); ``GET branches/B/protection`` (classic
  protection: 404 when there is none, 403 for a token without Administration: read, which a
  workflow's token never has; :attr:`Repo.protection` holds its ``allow_*`` settings),
* environments: ``GET environments/NAME`` (``deployment_branch_policy``) and
  ``GET environments/NAME/deployment-branch-policies`` (paginated by ``page``/``per_page``),
  set with :meth:`FakeGitHub.add_environment`,
* pull requests' heads and commit statuses (:meth:`FakeGitHub.set_pull_request_head`):
  ``GET commits/SHA/pulls``, ``GET pulls?state=``, ``POST statuses/SHA`` (422 on a bad state,
  a description over 140 characters or an unknown commit), ``GET commits/SHA/statuses``.

Tokens are registered with a permission (``write`` or ``read``); a read-only token gets
``403 Resource not accessible by integration`` on every write, as a fork's token does.
Faults are injected per request (method and path pattern), for the next ``times`` matches:

* :meth:`FakeGitHub.fail_next` answers with an error (``502``, ...) instead of doing anything,
  or, with ``after=True``, does the request and *then* answers with the error (GitHub's 502
  after the comment was created);
* :meth:`FakeGitHub.rate_limit_next` answers as GitHub's rate limits do: ``secondary`` (403 or
  429, the message says "secondary rate limit", ``retry-after`` only when given) or ``primary``
  (``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset``);
* :meth:`FakeGitHub.stall_next` does the request, then holds the answer back for a while, so a
  client with a shorter read timeout sees no answer although the resource was created.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

BOT_LOGIN = "github-actions[bot]"


def blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Token:
    login: str
    permission: str = "write"  # "write" | "read"
    installation: bool = True  # installation tokens cannot call GET /user
    admin: bool = False        # Administration: read (never a workflow's GITHUB_TOKEN)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: Any
    token: str | None
    status: int = 0


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    headers: dict
    remaining: int
    body: dict
    after: bool = False     # do the request first, then answer with the fault
    stall: float = 0.0      # do the request, then wait this long before answering normally


@dataclass
class Repo:
    full_name: str
    default_branch: str = "main"
    issues: dict = field(default_factory=dict)        # number -> issue dict (PRs included)
    comments: dict = field(default_factory=dict)      # id -> comment dict
    refs: dict = field(default_factory=dict)          # "heads/x" -> commit sha
    commits: dict = field(default_factory=dict)       # sha -> {"tree": {path: bytes}, "parents"}
    trees: dict = field(default_factory=dict)         # sha -> {path: bytes}
    next_number: int = 1
    labels: set = field(default_factory=set)
    protected: set = field(default_factory=set)       # branches under classic protection
    rules: dict = field(default_factory=dict)         # branch -> [rule dicts] from rulesets
    protection: dict = field(default_factory=dict)    # branch -> classic protection settings
    environments: dict = field(default_factory=dict)  # name -> {"policy": .., "branches": [..]}
    pulls: dict = field(default_factory=dict)         # number -> {head_sha, head_repo, base_ref}
    statuses: dict = field(default_factory=dict)      # commit sha -> [status dicts], oldest first


class FakeGitHub:
    """The fake server. Use as a context manager; ``url`` is the API base URL."""

    def __init__(self):
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, Token] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.webhooks: list = []  # bodies POSTed to /hooks/... (no token needed)
        self.next_comment_id = 1000
        self.next_object = 1
        self.inline_limit = 1024 * 1024  # contents API: larger files come without content
        self.before_request: Callable[[str, str], None] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup -------------------------------------------------------------------------------
    def start(self) -> "FakeGitHub":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_token(self, token: str, login: str = BOT_LOGIN, permission: str = "write",
                  installation: bool = True, admin: bool = False) -> str:
        self.tokens[token] = Token(login, permission, installation, admin)
        return token

    def add_environment(self, full_name: str, name: str, *, branches: list | None = None,
                        protected_branches: bool = False) -> None:
        """An environment: ``branches`` (names, or ``{"name", "type"}`` dicts) makes its
        deployment branch policy custom; ``protected_branches`` "Protected branches only";
        neither admits every branch (``deployment_branch_policy: null``)."""
        with self.lock:
            repo = self.add_repo(full_name)
            if protected_branches:
                policy = {"protected_branches": True, "custom_branch_policies": False}
            elif branches is not None:
                policy = {"protected_branches": False, "custom_branch_policies": True}
            else:
                policy = None
            items = [b if isinstance(b, dict) else {"name": b, "type": "branch"}
                     for b in branches or []]
            repo.environments[name] = {"policy": policy, "branches": [
                {"id": i + 1, "node_id": f"MDE2OkdhdGVCcmFuY2hQb2xpY3k{i}", **b}
                for i, b in enumerate(items)]}

    def secure(self, full_name: str, environment: str = "easeml-gate",
               ledger_branch: str = "easeml-ledger") -> None:
        """The settings docs/action.md asks of a repository whose gate holds the key: the
        environment admits only the default branch, the default branch takes reviewed pull
        requests only, the ledger branch can be neither force-pushed nor deleted."""
        with self.lock:
            repo = self.add_repo(full_name)
            default = repo.default_branch
            self.add_environment(full_name, environment, branches=[default])
            repo.rules[default] = [{"type": "pull_request", "parameters": {
                "required_approving_review_count": 1, "dismiss_stale_reviews_on_push": True,
                "require_code_owner_review": True, "require_last_push_approval": False,
                "required_review_thread_resolution": False}}]
            repo.rules[ledger_branch] = [{"type": "deletion"}, {"type": "non_fast_forward"}]

    def protect(self, full_name: str, branch: str, **allow: bool) -> None:
        """Classic branch protection on ``branch``; ``allow_force_pushes=True`` etc. loosen it."""
        with self.lock:
            repo = self.add_repo(full_name)
            repo.protected.add(branch)
            repo.protection[branch] = {k: bool(allow.get(k, False))
                                       for k in ("allow_force_pushes", "allow_deletions")}

    def add_repo(self, full_name: str, default_branch: str = "main") -> Repo:
        with self.lock:
            repo = self.repos.get(full_name)
            if repo is None:
                repo = Repo(full_name, default_branch)
                # the default branch exists with one commit holding a README
                tree = {"README.md": b"# fake\n"}
                tsha = self._new_sha("tree")
                repo.trees[tsha] = tree
                csha = self._new_sha("commit")
                repo.commits[csha] = {"tree": dict(tree), "parents": []}
                repo.refs[f"heads/{default_branch}"] = csha
                # the ledger branch's ruleset, as the documented setup has it (the gate refuses a
                # ledger branch that can be force-pushed or deleted); a test of its absence
                # clears it
                repo.rules["easeml-ledger"] = [{"type": "non_fast_forward"}, {"type": "deletion"}]
                self.repos[full_name] = repo
            return repo

    def add_pull_request(self, full_name: str, number: int | None = None, title: str = "PR") -> int:
        with self.lock:
            repo = self.add_repo(full_name)
            if number is None:
                number = repo.next_number
            repo.next_number = max(repo.next_number, number + 1)
            repo.issues[number] = {
                "number": number, "title": title, "body": "", "state": "open",
                "labels": [], "user": {"login": "octocat", "type": "User"},
                "pull_request": {"url": f"{self.url}/repos/{full_name}/pulls/{number}"},
            }
            return number

    def add_comment(self, full_name: str, number: int, body: str, login: str) -> int:
        with self.lock:
            repo = self.add_repo(full_name)
            cid = self.next_comment_id
            self.next_comment_id += 1
            repo.comments[cid] = {"id": cid, "issue": number, "body": body,
                                  "user": {"login": login,
                                           "type": "Bot" if login.endswith("[bot]") else "User"}}
            return cid

    def commit_file(self, full_name: str, branch: str, path: str, data: bytes,
                    message: str = "Update file") -> str:
        """Commit ``data`` at ``path`` on ``branch`` as a person would (outside easeml-ci)."""
        with self.lock:
            repo = self.repos[full_name]
            parent = repo.refs[f"heads/{branch}"]
            tree = dict(repo.commits[parent]["tree"])
            tree[path] = data
            sha = self._new_sha("commit")
            repo.commits[sha] = {"tree": tree, "parents": [parent], "message": message}
            repo.refs[f"heads/{branch}"] = sha
            return sha

    def fail_next(self, method: str, path_regex: str, status: int = 502, times: int = 1,
                  headers: dict | None = None, message: str = "Server Error",
                  after: bool = False) -> None:
        """Answer the next ``times`` matching requests with ``status`` (then behave).

        ``after=True``: carry the request out first, then answer with ``status`` anyway.
        """
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), status,
                                     headers or {}, times, {"message": message}, after=after))

    def rate_limit_next(self, method: str, path_regex: str, kind: str = "secondary", *,
                        status: int = 403, times: int = 1, retry_after: int | None = None,
                        reset: float | None = None) -> None:
        """Refuse the next ``times`` matching requests as GitHub's rate limits do.

        ``secondary``: the documented message, ``retry-after`` only when given. ``primary``:
        ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset: reset`` (epoch seconds).
        """
        headers: dict = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if kind == "secondary":
            message = ("You have exceeded a secondary rate limit. Please wait a few minutes "
                       "before you try again.")
        elif kind == "primary":
            message = "API rate limit exceeded for installation ID 4242."
            headers.update({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
                            "x-ratelimit-used": "5000",
                            "x-ratelimit-reset": str(int(reset if reset is not None else 0))})
        else:
            raise ValueError(f"kind must be 'primary' or 'secondary', got {kind!r}")
        self.fail_next(method, path_regex, status, times, headers, message)

    def stall_next(self, method: str, path_regex: str, seconds: float, times: int = 1) -> None:
        """Carry out the next ``times`` matching requests, then wait ``seconds`` to answer."""
        with self.lock:
            self.faults.append(Fault(method.upper(), re.compile(path_regex), 200, {}, times, {},
                                     stall=seconds))

    # -- inspection ----------------------------------------------------------------------
    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        with self.lock:
            out = list(self.requests)
        if method:
            out = [r for r in out if r.method == method.upper()]
        if path_regex:
            rx = re.compile(path_regex)
            out = [r for r in out if rx.search(r.path)]
        return out

    def comments_on(self, full_name: str, number: int) -> list[dict]:
        repo = self.repos[full_name]
        return [c for c in sorted(repo.comments.values(), key=lambda c: c["id"])
                if c["issue"] == number]

    def issues_of(self, full_name: str, state: str | None = None) -> list[dict]:
        repo = self.repos[full_name]
        return [i for n, i in sorted(repo.issues.items())
                if "pull_request" not in i and (state is None or i["state"] == state)]

    def file_on_branch(self, full_name: str, branch: str, path: str) -> bytes | None:
        repo = self.repos[full_name]
        sha = repo.refs.get(f"heads/{branch}")
        if sha is None:
            return None
        return repo.commits[sha]["tree"].get(path)

    # -- pull request heads and commit statuses (provenance of a workflow_run verdict) ----------
    # GitHub has not always listed a fork's pull request under GET commits/SHA/pulls; set this
    # to answer as it did then (the client must then find the PR through GET pulls).
    commit_pulls_omit_forks = False

    def set_pull_request_head(self, full_name: str, number: int, head_sha: str, *,
                              head_repo: str | None = None, base_ref: str = "main") -> None:
        """Give pull request ``number`` (created if needed) the head commit ``head_sha``."""
        with self.lock:
            repo = self.add_repo(full_name)
            if number not in repo.issues:
                self.add_pull_request(full_name, number)
            repo.pulls[number] = {"head_sha": head_sha, "head_repo": head_repo or full_name,
                                  "base_ref": base_ref}

    def statuses_on(self, full_name: str, sha: str) -> list[dict]:
        with self.lock:
            return list(self.repos[full_name].statuses.get(sha, []))

    # -- internals -----------------------------------------------------------------------
    def _new_sha(self, kind: str) -> str:
        self.next_object += 1
        return hashlib.sha1(f"{kind}-{self.next_object}".encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeGitHub
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: an answer is two writes (headers, then body), and with Nagle's algorithm the
    # body waits for the client's delayed ACK of the headers, 20-40 ms a request on loopback.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # every verb goes through one dispatcher
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client stopped waiting (a stalled answer): nothing to tell it
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        fake = self.server_fake
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"message": "Problems parsing JSON"})
            return
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else None
        rec = Recorded(method, path, query, body, token)
        with fake.lock:
            fake.requests.append(rec)
        if fake.before_request is not None:
            fake.before_request(method, path)
        fault = None
        with fake.lock:
            for candidate in fake.faults:
                if (candidate.remaining > 0 and candidate.method == method
                        and candidate.pattern.search(path)):
                    candidate.remaining -= 1
                    fault = candidate
                    break
        if fault is not None and not fault.after and not fault.stall:
            rec.status = fault.status
            self._send(fault.status, fault.body, fault.headers)
            return
        status, out, headers = self._route(method, path, query, body, token)
        rec.status = status
        if fault is not None and fault.stall:
            time.sleep(fault.stall)  # done, but the client hears nothing for a while
        elif fault is not None:  # done, and yet the client hears an error
            status, out, headers = fault.status, fault.body, fault.headers
            rec.status = status
        self._send(status, out, headers)

    # -- routing -------------------------------------------------------------------------
    def _route(self, method, path, query, body, token):
        fake = self.server_fake
        tok = fake.tokens.get(token or "")
        if path.startswith("/hooks/"):
            tok = Token("webhook")
        if tok is None:
            return 401, {"message": "Bad credentials"}, {}
        if path.startswith("/hooks/") and method == "POST":  # a Slack-style incoming webhook
            fake.webhooks.append(body)
            return 200, {"ok": True}, {}
        if path == "/user" and method == "GET":
            if tok.installation:
                return 403, {"message": "Resource not accessible by integration"}, {}
            return 200, {"login": tok.login, "type": "User"}, {}
        m = re.match(r"^/repos/([^/]+)/([^/]+)(/.*)?$", path)
        if not m:
            return 404, {"message": "Not Found"}, {}
        full = f"{m.group(1)}/{m.group(2)}"
        rest = m.group(3) or ""
        with fake.lock:
            repo = fake.repos.get(full)
            if repo is None:
                return 404, {"message": "Not Found"}, {}
            if method != "GET" and tok.permission != "write":
                return 403, {"message": "Resource not accessible by integration"}, {}
            return self._route_repo(repo, tok, method, rest, query, body or {})

    def _route_repo(self, repo: Repo, tok: Token, method, rest, query, body):
        fake = self.server_fake
        if rest == "" and method == "GET":
            return 200, {"full_name": repo.full_name, "default_branch": repo.default_branch}, {}

        # issues -----------------------------------------------------------------------
        if rest == "/issues" and method == "GET":
            items = [i for _, i in sorted(repo.issues.items(), reverse=True)]
            state = query.get("state", "open")
            if state != "all":
                items = [i for i in items if i["state"] == state]
            if query.get("labels"):
                want = set(query["labels"].split(","))
                items = [i for i in items if want <= {lab["name"] for lab in i["labels"]}]
            return self._page(items, query)
        if rest == "/issues" and method == "POST":
            if not body.get("title"):
                return 422, {"message": "Validation Failed"}, {}
            number = repo.next_number
            repo.next_number += 1
            labels = [str(x) for x in body.get("labels") or []]
            repo.labels.update(labels)
            issue = {"number": number, "title": body["title"], "body": body.get("body") or "",
                     "state": "open", "labels": [{"name": x} for x in labels],
                     "user": {"login": tok.login, "type": "Bot" if tok.installation else "User"}}
            repo.issues[number] = issue
            return 201, issue, {}
        m = re.match(r"^/issues/(\d+)$", rest)
        if m and method in ("PATCH", "GET"):
            issue = repo.issues.get(int(m.group(1)))
            if issue is None:
                return 404, {"message": "Not Found"}, {}
            if method == "PATCH":
                for k in ("title", "body", "state"):
                    if k in body:
                        issue[k] = body[k]
                if "labels" in body:
                    issue["labels"] = [{"name": str(x)} for x in body["labels"]]
            return 200, issue, {}

        # comments ---------------------------------------------------------------------
        m = re.match(r"^/issues/(\d+)/comments$", rest)
        if m:
            number = int(m.group(1))
            if number not in repo.issues:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                items = [c for c in sorted(repo.comments.values(), key=lambda c: c["id"])
                         if c["issue"] == number]
                return self._page([self._comment_json(c) for c in items], query)
            if method == "POST":
                if not body.get("body"):
                    return 422, {"message": "Validation Failed"}, {}
                cid = fake.next_comment_id
                fake.next_comment_id += 1
                repo.comments[cid] = {"id": cid, "issue": number, "body": body["body"],
                                      "user": {"login": tok.login,
                                               "type": "Bot" if tok.installation else "User"}}
                return 201, self._comment_json(repo.comments[cid]), {}
        m = re.match(r"^/issues/comments/(\d+)$", rest)
        if m and method == "PATCH":
            c = repo.comments.get(int(m.group(1)))
            if c is None:
                return 404, {"message": "Not Found"}, {}
            if c["user"]["login"] != tok.login:
                return 403, {"message": "Must have admin rights to Repository."}, {}
            c["body"] = body.get("body", c["body"])
            return 200, self._comment_json(c), {}

        # git data ---------------------------------------------------------------------
        m = re.match(r"^/git/ref/(heads/.+)$", rest)
        if m and method == "GET":
            sha = repo.refs.get(m.group(1))
            if sha is None:
                return 404, {"message": "Not Found"}, {}
            return 200, {"ref": f"refs/{m.group(1)}", "object": {"sha": sha, "type": "commit"}}, {}
        m = re.match(r"^/branches/(.+)/protection$", rest)
        if m and method == "GET":
            if m.group(1) not in repo.protected:
                return 404, {"message": "Branch not protected"}, {}
            if not tok.admin:
                return 403, {"message": "Resource not accessible by integration"}, {}
            settings = repo.protection.get(m.group(1), {})
            return 200, {"url": f"/repos/{repo.full_name}/branches/{m.group(1)}/protection",
                         **{k: {"enabled": bool(settings.get(k, False))}
                            for k in ("allow_force_pushes", "allow_deletions")}}, {}
        m = re.match(r"^/environments/([^/]+)$", rest)
        if m and method == "GET":
            env = repo.environments.get(m.group(1))
            if env is None:
                return 404, {"message": "Not Found"}, {}
            rules = [{"id": 1, "type": "branch_policy"}] if env["policy"] else []
            return 200, {"id": 7, "name": m.group(1), "protection_rules": rules,
                         "deployment_branch_policy": env["policy"]}, {}
        m = re.match(r"^/environments/([^/]+)/deployment-branch-policies$", rest)
        if m and method == "GET":
            env = repo.environments.get(m.group(1))
            if env is None:
                return 404, {"message": "Not Found"}, {}
            if not (env["policy"] or {}).get("custom_branch_policies"):
                return 404, {"message": "Not Found"}, {}
            per, page = int(query.get("per_page", 30)), int(query.get("page", 1))
            items = env["branches"][(page - 1) * per: page * per]
            return 200, {"total_count": len(env["branches"]), "branch_policies": items}, {}
        m = re.match(r"^/branches/(.+)$", rest)
        if m and method == "GET":
            if f"heads/{m.group(1)}" not in repo.refs:
                return 404, {"message": "Branch not found"}, {}
            return 200, {"name": m.group(1), "protected": m.group(1) in repo.protected}, {}
        m = re.match(r"^/rules/branches/(.+)$", rest)
        if m and method == "GET":
            return self._page(list(repo.rules.get(m.group(1), [])), query)
        m = re.match(r"^/git/blobs/([0-9a-f]+)$", rest)
        if m and method == "GET":
            for commit in repo.commits.values():
                for data in commit["tree"].values():
                    if blob_sha(data) == m.group(1):
                        return 200, {"sha": m.group(1), "size": len(data), "encoding": "base64",
                                     "content": base64.encodebytes(data).decode()}, {}
            return 404, {"message": "Not Found"}, {}
        if rest == "/git/refs" and method == "POST":
            ref = str(body.get("ref", ""))
            if not ref.startswith("refs/heads/") or body.get("sha") not in repo.commits:
                return 422, {"message": "Validation Failed"}, {}
            key = ref[len("refs/"):]
            if key in repo.refs:
                return 422, {"message": "Reference already exists"}, {}
            repo.refs[key] = body["sha"]
            return 201, {"ref": ref, "object": {"sha": body["sha"], "type": "commit"}}, {}
        if rest == "/git/trees" and method == "POST":
            tree = {}
            for entry in body.get("tree") or []:
                if entry.get("type") != "blob" or "content" not in entry:
                    return 422, {"message": "Validation Failed"}, {}
                tree[entry["path"]] = entry["content"].encode()
            sha = fake._new_sha("tree")
            repo.trees[sha] = tree
            return 201, {"sha": sha}, {}
        if rest == "/git/commits" and method == "POST":
            tree = repo.trees.get(body.get("tree"))
            if tree is None or any(p not in repo.commits for p in body.get("parents") or []):
                return 422, {"message": "Validation Failed"}, {}
            sha = fake._new_sha("commit")
            repo.commits[sha] = {"tree": dict(tree), "parents": list(body.get("parents") or []),
                                 "message": str(body.get("message", ""))}
            return 201, {"sha": sha}, {}

        # commits touching a path (GET /commits?sha=BRANCH&path=P), newest first ---------
        if rest == "/commits" and method == "GET":
            start = repo.refs.get(f"heads/{query.get('sha', repo.default_branch)}",
                                  query.get("sha"))
            if start not in repo.commits:
                return 404, {"message": "Not Found"}, {}
            path = query.get("path")
            out, seen, todo = [], set(), [start]
            if path is not None:  # git log -- PATH: first parents only (history simplification)
                sha = start
                while sha:
                    commit = repo.commits[sha]
                    parent = commit["parents"][0] if commit["parents"] else None
                    before = repo.commits[parent]["tree"].get(path) if parent else None
                    if commit["tree"].get(path) != before:
                        out.append(self._commit_json(sha, commit))
                    sha = parent
                return self._page(out, query)
            while todo:  # every commit reachable from the start (git log order: children first)
                sha = todo.pop(0)
                if sha in seen:
                    continue
                seen.add(sha)
                out.append(self._commit_json(sha, repo.commits[sha]))
                todo.extend(repo.commits[sha]["parents"])
            return self._page(out, query)
        m = re.match(r"^/git/refs/(heads/.+)$", rest)
        if m and method in ("PATCH", "DELETE"):
            branch = m.group(1)[len("heads/"):]
            rules = {r.get("type") for r in repo.rules.get(branch, [])}
            if branch not in repo.refs and f"heads/{branch}" not in repo.refs:
                return 422, {"message": "Reference does not exist"}, {}
            if method == "DELETE":
                if "deletion" in rules:
                    return 422, {"message": "Cannot delete this protected branch"}, {}
                del repo.refs[m.group(1)]
                return 204, None, {}
            new, old = body.get("sha"), repo.refs[m.group(1)]
            if new not in repo.commits:
                return 422, {"message": "Object does not exist"}, {}
            if not self._descends(repo, new, old) and (not body.get("force")
                                                        or "non_fast_forward" in rules):
                return 422, {"message": "Update is not a fast forward"}, {}
            repo.refs[m.group(1)] = new
            return 200, {"ref": f"refs/{m.group(1)}", "object": {"sha": new, "type": "commit"}}, {}

        # contents ---------------------------------------------------------------------
        m = re.match(r"^/contents/(.+)$", rest)
        if m:
            fpath = m.group(1)
            if method == "GET":
                branch = query.get("ref", repo.default_branch)
                csha = repo.refs.get(f"heads/{branch}")
                if csha is None:
                    return 404, {"message": f"No commit found for the ref {branch}"}, {}
                tree = repo.commits[csha]["tree"]
                data = tree.get(fpath)
                if data is None:
                    prefix = fpath.rstrip("/") + "/"
                    names = sorted({p[len(prefix):].split("/")[0] for p in tree
                                    if p.startswith(prefix)})
                    if not names:
                        return 404, {"message": "Not Found"}, {}
                    return 200, [{"name": n, "path": prefix + n, "type": "file"}
                                 for n in names], {}
                if len(data) > fake.inline_limit:
                    return 200, {"type": "file", "path": fpath, "sha": blob_sha(data),
                                 "encoding": "none", "size": len(data), "content": ""}, {}
                return 200, {"type": "file", "path": fpath, "sha": blob_sha(data),
                             "encoding": "base64", "size": len(data),
                             "content": base64.encodebytes(data).decode()}, {}
            if method == "PUT":
                branch = body.get("branch", repo.default_branch)
                csha = repo.refs.get(f"heads/{branch}")
                if csha is None:
                    return 404, {"message": f"Branch {branch} not found"}, {}
                if "message" not in body or "content" not in body:
                    return 422, {"message": "Invalid request."}, {}
                tree = dict(repo.commits[csha]["tree"])
                current = tree.get(fpath)
                given = body.get("sha")
                if current is not None and not given:
                    return 422, {"message": "Invalid request.\n\n\"sha\" wasn't supplied."}, {}
                if current is not None and given != blob_sha(current):
                    return 409, {"message": f"{fpath} does not match {given}"}, {}
                if current is None and given:
                    return 409, {"message": f"{fpath} does not match {given}"}, {}
                try:
                    data = base64.b64decode(body["content"], validate=True)
                except ValueError:
                    return 422, {"message": "content is not valid Base64"}, {}
                tree[fpath] = data
                new = fake._new_sha("commit")
                repo.commits[new] = {"tree": tree, "parents": [csha], "message": body["message"]}
                repo.refs[f"heads/{branch}"] = new
                return (201 if current is None else 200), {
                    "content": {"path": fpath, "sha": blob_sha(data)},
                    "commit": {"sha": new}}, {}

        # pull requests by head commit, commit statuses ------------------------------------
        routed = self._route_pulls_and_statuses(repo, method, rest, query, body)
        if routed is not None:
            return routed
        return 404, {"message": "Not Found"}, {}

    @staticmethod
    def _commit_json(sha: str, commit: dict) -> dict:
        return {"sha": sha, "commit": {"message": commit.get("message", "")},
                "parents": [{"sha": p} for p in commit["parents"]]}

    @staticmethod
    def _descends(repo: Repo, new: str, old: str) -> bool:
        todo, seen = [new], set()
        while todo:
            sha = todo.pop()
            if sha == old:
                return True
            if sha not in seen:
                seen.add(sha)
                todo.extend(repo.commits[sha]["parents"])
        return False

    def _pull_json(self, repo: Repo, number: int) -> dict:
        head = repo.pulls[number]
        return {"number": number, "state": repo.issues[number]["state"],
                "title": repo.issues[number]["title"],
                "html_url": f"https://github.example/{repo.full_name}/pull/{number}",
                "head": {"sha": head["head_sha"], "ref": "feature",
                         "repo": {"full_name": head["head_repo"],
                                  "fork": head["head_repo"] != repo.full_name}},
                "base": {"ref": head["base_ref"], "repo": {"full_name": repo.full_name}}}

    def _route_pulls_and_statuses(self, repo: Repo, method, rest, query, body):
        fake = self.server_fake
        m = re.match(r"^/commits/([0-9a-fA-F]+)/pulls$", rest)
        if m and method == "GET":
            sha = m.group(1).lower()
            items = [self._pull_json(repo, n) for n, h in sorted(repo.pulls.items())
                     if h["head_sha"] == sha and repo.issues[n]["state"] == "open"
                     and not (fake.commit_pulls_omit_forks and h["head_repo"] != repo.full_name)]
            return self._page(items, query)
        if rest == "/pulls" and method == "GET":
            state = query.get("state", "open")
            items = [self._pull_json(repo, n) for n in sorted(repo.pulls, reverse=True)
                     if state == "all" or repo.issues[n]["state"] == state]
            return self._page(items, query)
        m = re.match(r"^/commits/([0-9a-fA-F]+)/statuses$", rest)
        if m and method == "GET":
            return self._page(list(reversed(repo.statuses.get(m.group(1).lower(), []))), query)
        m = re.match(r"^/statuses/([0-9a-fA-F]+)$", rest)
        if m and method == "POST":
            sha = m.group(1).lower()
            known = sha in repo.commits or any(h["head_sha"] == sha for h in repo.pulls.values())
            if not known:
                return 422, {"message": f"No commit found for SHA: {sha}"}, {}
            if body.get("state") not in ("pending", "success", "failure", "error"):
                return 422, {"message": "Validation Failed: state"}, {}
            if len(str(body.get("description") or "")) > 140:
                return 422, {"message": "Validation Failed: description is too long "
                                        "(maximum is 140 characters)"}, {}
            status = {"id": int(fake._new_sha("status")[:8], 16), "state": body["state"],
                      "description": body.get("description"),
                      "context": body.get("context") or "default",
                      "target_url": body.get("target_url")}
            repo.statuses.setdefault(sha, []).append(status)
            return 201, status, {}
        return None

    def _comment_json(self, c: dict) -> dict:
        return {"id": c["id"], "body": c["body"], "user": dict(c["user"]),
                "html_url": f"https://github.example/comment/{c['id']}"}

    def _page(self, items: list, query: dict):
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        page = max(1, int(query.get("page", 1)))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            q = {k: v for k, v in query.items() if k != "page"}
            q["page"] = str(page + 1)
            qs = "&".join(f"{k}={v}" for k, v in q.items())
            base = f"{self.server_fake.url}{urlsplit(self.path).path}"
            headers["Link"] = f'<{base}?{qs}>; rel="next"'
        return 200, chunk, headers
