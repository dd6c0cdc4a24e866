"""The `easeml-automl` CLI (submit, status, work, catalogue) and promotion into a pull request.

Promotion talks to a tiny fake GitHub REST API started on 127.0.0.1 by the test itself; it keeps
branches, files and pull requests in memory and checks the token on every call.
"""
from __future__ import annotations

import base64
import csv
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from click.testing import CliRunner

from automl_runner.candidates.catalogue import default_catalogue, export_onnx
from automl_runner.cli import main
from automl_runner.worker.promote import maybe_promote
from automl_runner.datasets.schema import infer_schema, load_dataset
from automl_runner.store import open_store

TOKEN = "ghs_test_token"


class FakeGitHub:
    """Just the endpoints promotion uses: repo, refs, contents, pulls."""

    def __init__(self, repo="acme/models"):
        self.repo = repo
        self.repo_id = 4242  # GitHub's id of the repository (a namesake created later has another)
        self.answers_as = repo  # the name GitHub answers with (another after a rename or transfer)
        self.symlinks: set[tuple[str, str]] = set()  # (branch, path) committed as a symbolic link
        self.refs = {"main": "c0ffee"}
        self.files: dict[tuple[str, str], bytes] = {}
        self.pulls: list[dict] = []
        self.calls: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                url = urlsplit(self.path)
                fake.calls.append((method, url.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"message": "Bad credentials"})
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                prefix = f"/repos/{fake.repo}"
                if not url.path.startswith(prefix):
                    return self._send(404, {"message": "Not Found"})
                rest = unquote(url.path[len(prefix):])
                if rest == "" and method == "GET":
                    return self._send(200, {"full_name": fake.answers_as, "id": fake.repo_id, "default_branch": "main"})
                m = re.match(r"^/git/ref/heads/(.+)$", rest)
                if m and method == "GET":
                    if m.group(1) not in fake.refs:
                        return self._send(404, {"message": "Not Found"})
                    return self._send(200, {"object": {"sha": fake.refs[m.group(1)]}})
                if rest == "/git/refs" and method == "POST":
                    fake.refs[body["ref"].removeprefix("refs/heads/")] = body["sha"]
                    return self._send(201, {"ref": body["ref"]})
                m = re.match(r"^/contents/(.+)$", rest)
                if m:
                    path = m.group(1)
                    branch = q.get("ref") if method == "GET" else body["branch"]
                    if branch not in fake.refs:
                        return self._send(404, {"message": "No commit found for the ref"})
                    key = (branch, path)
                    sha = f"sha-{hash(fake.files.get(key)) & 0xffff:x}" if key in fake.files else None
                    if method == "GET":
                        if key in fake.symlinks:
                            return self._send(200, {"type": "symlink", "target": ".github/workflows", "path": path})
                        if key not in fake.files:
                            return self._send(404, {"message": "Not Found"})
                        return self._send(200, {"sha": sha, "content": base64.b64encode(fake.files[key]).decode()})
                    if key in fake.files and body.get("sha") != sha:
                        return self._send(409 if body.get("sha") else 422, {"message": "sha mismatch"})
                    fake.files[key] = base64.b64decode(body["content"])
                    return self._send(200, {"content": {"path": path}})
                if rest == "/pulls" and method == "GET":
                    owner = fake.repo.split("/")[0]
                    out = [p for p in fake.pulls if p["state"] == q.get("state", "open")
                           and f"{owner}:{p['head']}" == q.get("head")]
                    return self._send(200, out)
                if rest == "/pulls" and method == "POST":
                    if any(p["head"] == body["head"] and p["state"] == "open" for p in fake.pulls):
                        return self._send(422, {"message": "A pull request already exists"})
                    pr = {"number": len(fake.pulls) + 1, "state": "open", "head": body["head"], "base": body["base"],
                          "title": body["title"], "body": body["body"]}
                    pr["html_url"] = f"https://github.example/{fake.repo}/pull/{pr['number']}"
                    fake.pulls.append(pr)
                    return self._send(201, pr)
                m = re.match(r"^/pulls/(\d+)$", rest)
                if m and method == "PATCH":
                    pr = fake.pulls[int(m.group(1)) - 1]
                    pr.update(title=body["title"], body=body["body"])
                    return self._send(200, pr)
                return self._send(404, {"message": f"no route {method} {rest}"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_PATCH(self):
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github(monkeypatch):
    fake = FakeGitHub()
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.delenv("EASEML_GITHUB_TOKEN", raising=False)
    yield fake
    fake.close()


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "iris-like.csv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", "f2", "shade", "species"])
        for _ in range(90):
            a, b = rng.normal(size=2)
            shade = rng.choice(["dark", "light"])
            w.writerow([round(a, 3), round(b, 3), shade, ["setosa", "versicolor", "virginica"][int(a > 0) + int(b > 0.5)]])
    return str(p)


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


# --------------------------------------------------------------------------------------------


def test_submit_shows_the_inferred_schema_and_queues(tmp_path, data):
    store = f"sqlite:///{tmp_path / 'q.db'}"
    r = run("submit", data, "--store", store, "--name", "flowers", "--target", "species",
            "--only", "logreg-C1", "--only", "gaussian-nb", "--output", tmp_path / "out", "--root", tmp_path)
    assert r.exit_code == 0, r.output
    assert "classification, 3 classes: setosa, versicolor, virginica" in r.output
    assert "shade" in r.output and "categorical (2: dark, light)" in r.output
    assert "tenant flowers: queued 2 candidates (logreg-C1, gaussian-nb)" in r.output
    r = run("status", "--store", store, "--json")
    (t,) = json.loads(r.output)["tenants"]
    assert (t["name"], t["queued"], t["done"], t["best_candidate"]) == ("flowers", 2, 0, None)


def test_submit_json_and_dry_run(tmp_path, data):
    store = tmp_path / "q.db"
    r = run("submit", data, "--store", store, "--name", "f", "--target", "species", "--categorical", "f1",
            "--dry-run", "--json")
    out = json.loads(r.output)
    assert out["registered"] is False and out["queued"] == []
    assert {f["name"]: f["kind"] for f in out["schema"]["features"]}["f1"] == "categorical"
    assert "logreg-C1" in out["accepted"]
    assert not store.exists()  # a dry run creates nothing
    r = CliRunner().invoke(main, ["catalogue", "--store", str(store)])  # nor does a catalogue sync (a typo)
    assert r.exit_code == 2 and "does not exist; `easeml-automl submit` creates it" in r.output
    assert not store.exists()
    r = run("submit", data, "--store", store, "--name", "f", "--target", "species", "--only", "lda")
    assert r.exit_code == 0 and f"created a new store at {store}" in r.stderr  # creating one is said
    run("catalogue", "--store", store)
    assert [t["name"] for t in json.loads(run("status", "--store", store, "--json").output)["tenants"]] == ["f"]
    assert "created a new store" not in run("submit", data, "--store", store, "--name", "g", "--target",
                                            "species", "--only", "lda").stderr
    r = CliRunner().invoke(main, ["status", "--store", str(store), "--tenant", "ghost"])
    assert r.exit_code == 2 and "error: no tenant named 'ghost'; tenants: f, g" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "nope"], "error: --target: no column 'nope' in"),
        (["--target", "species", "--exclude", "xgboost"], "error: --exclude: no candidate named 'xgboost'"),
        (["--target", "species", "--margin", "2"], "error: --margin must be in [0, 1), got 2.0"),
        (["--target", "species", "--repository", "not-a-repo"], "error: --repository 'not-a-repo': expected OWNER/NAME"),
        (["--target", "species", "--task", "ranking"], "Invalid value for '--task'"),
        (["--target", "species", "--exclude", "knn-5", "--only", "knn-5"], "both excluded and in --only"),
    ],
)
def test_submit_bad_input_exits_2_with_one_line(tmp_path, data, args, message):
    r = CliRunner().invoke(main, ["submit", data, "--store", str(tmp_path / "q.db"), "--name", "t", *args])
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit", "missing.csv", "--store", "{db}", "--name", "t", "--target", "y"], "error: dataset 'missing.csv' does not exist"),
        (["status", "--store", "mysql://h/db"], "error: --store: unsupported database 'mysql'"),
        (["status", "--store", "{db}"], "error: --store: SQLite file '{db}' does not exist; `easeml-automl submit` creates it"),
        (["work", "--store", "{db}", "--device", "gpu0"], "must be cpu or cuda:N"),
        (["work", "--store", "{db}", "--prior", "/no/prior.csv"], "Invalid value for --prior: /no/prior.csv: cannot read matrix file"),
        (["work", "--store", "/no/such/dir/q.db"], "error: --store: SQLite file '/no/such/dir/q.db' does not exist"),
        (["status", "--store", "postgresql://postgres@127.0.0.1:1/test"], "error: --store: cannot connect to PostgreSQL"),
    ],
)
def test_other_bad_input_exits_2(tmp_path, args, message):
    args = [a.replace("{db}", str(tmp_path / "q.db")) for a in args]
    message = message.replace("{db}", str(tmp_path / "q.db"))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("model_path", ["../other/model.onnx", "/etc/model.onnx", "models/../../x.onnx",
                                        ".github/workflows/pwn.yml", ".git/hooks/post-merge", "models//m.onnx"])
def test_a_model_path_outside_the_repository_models_is_refused(tmp_path, data, model_path):
    r = CliRunner().invoke(main, ["submit", data, "--store", str(tmp_path / "q.db"), "--name", "t", "--target", "species",
                                  "--repository", "acme/models", "--model-path", model_path])
    assert r.exit_code == 2, r.output
    assert f"--model-path {model_path!r}: expected a relative path inside the repository" in r.output
    assert "Traceback" not in r.output


def test_work_on_a_store_that_does_not_exist_is_refused_and_creates_nothing(tmp_path, monkeypatch):
    """`work --store queu.db` (a typo) is refused as `status` refuses it, not an empty new queue."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["work", "--store", "queu.db", "--exit-when-idle"])
    assert r.exit_code == 2, r.output
    assert "error: --store: SQLite file 'queu.db' does not exist; `easeml-automl submit` creates it" in r.output
    assert "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_work_trains_reports_and_promotes_into_one_pull_request(tmp_path, data, github):
    store = f"sqlite:///{tmp_path / 'q.db'}"
    out = tmp_path / "out"
    r = run("submit", data, "--store", store, "--name", "flowers", "--target", "species", "--output", out,
            "--root", tmp_path, "--repository", "acme/models", "--margin", "0", "--only", "logreg-C0.01", "--only", "decision-tree-d5",
            "--only", "gaussian-nb")
    assert r.exit_code == 0, r.output
    r = run("work", "--store", store, "--exit-when-idle", "--poll", "0.05", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert sorted(x["candidate"] for x in lines) == ["decision-tree-d5", "gaussian-nb", "logreg-C0.01"]
    assert all(x["status"] == "done" and 0 <= x["score"] <= 1 for x in lines)
    with open_store(store) as s:
        best = s.best_trial("flowers")
        promos = s.promotions("flowers")
    assert promos[-1].trial_id == best.id and promos[-1].status == "pr-opened"
    # one pull request however many promotions, holding exactly the best model
    assert len(github.pulls) == 1 and github.pulls[0]["head"] == "easeml-automl/flowers"
    assert github.pulls[0]["html_url"] == promos[-1].pull_request
    assert best.candidate in github.pulls[0]["title"]
    model = github.files[("easeml-automl/flowers", "models/flowers.onnx")]
    assert model == (out / "model.onnx").read_bytes() == open(best.onnx_path, "rb").read()
    card = json.loads(github.files[("easeml-automl/flowers", "models/flowers.card.json")])
    assert card["candidate"] == best.candidate and card["validation_score"] == best.score
    assert card["data_fingerprint"] == infer_schema(data, "species").fingerprint
    assert json.loads((out / "model-card.json").read_text())["candidate"] == best.candidate
    assert "easeml-automl/flowers" in github.refs
    # the human status shows the promotion and the PR
    r = run("status", "--store", store)
    assert "flowers" in r.output and best.candidate in r.output and "[pr-opened]" in r.output


@pytest.mark.parametrize("option, shown", [
    ([], "prior builtin: 71 tenants"),  # the default: without a prior the scheduler is measured slow
    (["--prior", "builtin"], "prior builtin: 71 tenants"),
    (["--prior", "none"], "no prior"),
])
def test_work_uses_the_builtin_prior_unless_told_otherwise(tmp_path, data, option, shown):
    store = f"sqlite:///{tmp_path / 'q.db'}"
    run("submit", data, "--store", store, "--name", "flowers", "--target", "species",
        "--only", "logreg-C1", "--only", "lda", "--only", "gaussian-nb")
    r = run("work", "--store", store, *option, "--max-trials", "2")
    assert r.exit_code == 0, r.output
    assert f"scheduler multitenant ({shown})" in r.stderr
    assert "stopped after 2 trial(s), 2 done" in r.stderr


def _fit(schema, ds, name):
    X_tr, X_val, y_tr, _ = ds.split()
    cand = {c.name: c for c in default_catalogue()}[name]
    est = cand.build(schema).fit(X_tr, y_tr)
    return cand, export_onnx(est, schema, X_val)


def test_second_promotion_updates_the_same_pull_request(tmp_path, data, github):
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), output=str(tmp_path / "out"),
                     repository="acme/models", model_path="gate/model.onnx", only=["gaussian-nb", "lda", "knn-5"],
                     margin=0.05)
        tenant = s.tenant("flowers")
        sent = []
        for name, score in [("gaussian-nb", 0.60), ("knn-5", 0.62), ("lda", 0.80)]:
            cand, blob = _fit(schema, ds, name)
            c = s.try_claim("flowers", name, "w", "cpu")
            s.complete(c, "w", score, 0.1, None, None)
            p = maybe_promote(s, tenant, c.trial_id, cand, blob, score)
            sent.append(None if p is None else (p.candidate, p.status))
            if p is not None:
                assert github.files[("easeml-automl/flowers", "gate/model.onnx")] == blob
        assert sent == [("gaussian-nb", "pr-opened"), None, ("lda", "pr-opened")]
        assert len(github.pulls) == 1 and "lda" in github.pulls[0]["title"]
        assert sum(1 for m, p in github.calls if m == "POST" and p.endswith("/pulls")) == 1
        assert sum(1 for m, p in github.calls if m == "PATCH") == 1
        card = json.loads(github.files[("easeml-automl/flowers", "gate/model.card.json")])
        assert (card["validation_score"], card["previous_score"]) == (0.80, 0.60)


def test_a_model_stopped_early_is_promoted_when_best_and_its_card_says_how_far_it_trained(tmp_path, data):
    """A trial stopped at a rung is a done trial with its rung score; when it is the tenant's best
    it is promoted like any other (the simulator counts it so), and its card says it was stopped."""
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    out = tmp_path / "out"
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), output=str(out), only=["gaussian-nb", "lda"])
        tenant = s.tenant("flowers")
        cand, blob = _fit(schema, ds, "lda")
        c = s.try_claim("flowers", "lda", "w", "cpu")
        s.complete(c, "w", 0.9, 0.1, None, None, fidelity=1 / 9)
        p = maybe_promote(s, tenant, c.trial_id, cand, blob, 0.9, fidelity=1 / 9)
        assert p is not None and p.score == 0.9
        card = json.loads((out / "model-card.json").read_text())
        assert card["fidelity"] == pytest.approx(1 / 9)
        assert "| training budget | 11% of the candidate's budget: stopped early at a rung" in \
            (out / "MODEL_CARD.md").read_text()
        # a full-budget model's card has no such key nor row (full-budget cards are as before)
        cand, blob = _fit(schema, ds, "gaussian-nb")
        c = s.try_claim("flowers", "gaussian-nb", "w", "cpu")
        s.complete(c, "w", 0.95, 0.1, None, None)
        assert maybe_promote(s, tenant, c.trial_id, cand, blob, 0.95) is not None
        assert "fidelity" not in json.loads((out / "model-card.json").read_text())
        assert "training budget" not in (out / "MODEL_CARD.md").read_text()


def test_pull_request_failure_is_recorded_not_raised(tmp_path, data, github, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), output=str(tmp_path / "out"),
                     repository="acme/models", only=["gaussian-nb"])
        cand, blob = _fit(schema, ds, "gaussian-nb")
        c = s.try_claim("flowers", "gaussian-nb", "w", "cpu")
        s.complete(c, "w", 0.7, 0.1, None, None)
        p = maybe_promote(s, s.tenant("flowers"), c.trial_id, cand, blob, 0.7)
        assert p.status == "pr-failed" and "401" in p.message and "Bad credentials" in p.message
        assert (tmp_path / "out" / "model.onnx").read_bytes() == blob  # local files are still written
        assert s.last_promotion("flowers").status == "pr-failed"
    assert github.pulls == []


def test_catalogue_command_lists_candidates(tmp_path, data):
    r = run("catalogue", "--json")
    names = [c["name"] for c in json.loads(r.output)["candidates"]]
    assert "logreg-C1" in names and "random-forest-100" in names
    r = run("catalogue")
    assert re.search(r"^mlp-64\s+mlp\s+class", r.output, re.M)


def test_gpu_runner_workflow_runs_a_worker_with_valid_options(monkeypatch):
    import os
    import shlex

    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "workflows", "automl-worker.yml")
    with open(path) as fh:
        wf = yaml.safe_load(fh)
    job = wf["jobs"]["work"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert "matrix.gpu" in job["concurrency"]["group"] and job["concurrency"]["cancel-in-progress"] is False
    assert job["timeout-minutes"] > 0
    (step,) = [s for s in job["steps"] if "run" in s and 'easeml-automl" work' in s["run"]]
    # the store URL (with its password) reaches the worker through the environment only
    assert step["env"]["EASEML_AUTOML_STORE"] == "${{ secrets.EASEML_AUTOML_STORE }}"
    cmd = step["run"][step["run"].index('"$RUNNER_TEMP/easeml-automl/bin/easeml-automl" work'):]
    cmd = cmd.replace("\\\n", " ").replace('"$MAX_TRIALS"', "7").replace('"$WORKER_ID"', "runner-gpu0")
    argv = shlex.split(cmd)
    assert argv[:2] == ["$RUNNER_TEMP/easeml-automl/bin/easeml-automl", "work"]
    assert "--store" not in argv
    monkeypatch.setenv("EASEML_AUTOML_STORE", "postgresql://h/db")
    ctx = main.commands["work"].make_context("work", argv[2:])  # raises on an unknown or malformed option
    assert ctx.params["device"] == "cuda:0" and ctx.params["exit_when_idle"] is True
    assert ctx.params["store_url"] == "postgresql://h/db" and ctx.params["max_trials"] == 7


def test_an_older_promotion_never_overwrites_a_newer_one(tmp_path, data, github):
    """Worker A promotes first but writes last: the output and the PR keep B's newer model."""
    from automl_runner.worker.promote import build_card, open_or_update_pr, write_local

    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), only=["gaussian-nb", "lda"], margin=0.0)
        tenant = s.tenant("flowers")
        promos = {}
        for name, score in [("gaussian-nb", 0.6), ("lda", 0.8)]:
            cand, blob = _fit(schema, ds, name)
            c = s.try_claim("flowers", name, "w", "cpu")
            s.complete(c, "w", score, 0.1, None, None)
            promos[name] = (s.begin_promotion("flowers", c.trial_id), cand, blob)
    (p_old, c_old, b_old), (p_new, c_new, b_new) = promos["gaussian-nb"], promos["lda"]
    assert p_old.id < p_new.id
    out = str(tmp_path / "out")
    assert write_local(out, build_card(tenant, p_new, c_new, b_new), b_new) is not None
    assert write_local(out, build_card(tenant, p_old, c_old, b_old), b_old) is None
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b_new
    open_or_update_pr("acme/models", "flowers", "m.onnx", build_card(tenant, p_new, c_new, b_new), b_new)
    from automl_runner.worker.promote import Superseded

    with pytest.raises(Superseded):
        open_or_update_pr("acme/models", "flowers", "m.onnx", build_card(tenant, p_old, c_old, b_old), b_old)
    assert github.files[("easeml-automl/flowers", "m.onnx")] == b_new


def test_promoted_model_is_readable_by_the_gate(tmp_path, data):
    """The gate's ONNX loader takes the promoted model and predicts the same labels."""
    from easeml_ci.models import OnnxModel

    store = f"sqlite:///{tmp_path / 'q.db'}"
    out = tmp_path / "out"
    run("submit", data, "--store", store, "--name", "flowers", "--target", "species", "--output", out,
        "--root", tmp_path, "--only", "logreg-C1")
    assert run("work", "--store", store, "--once", "--json").exit_code == 0
    schema = infer_schema(data, "species")
    _, X_val, _, _ = load_dataset(data, schema).split()
    gate = OnnxModel(out / "model.onnx", "promoted").predict(X_val.astype(np.float32))
    est = {c.name: c for c in default_catalogue()}["logreg-C1"].build(schema)
    X_tr, _, y_tr, _ = load_dataset(data, schema).split()
    assert list(np.asarray(gate).astype(str)) == list(est.fit(X_tr, y_tr).predict(X_val.astype(np.float32)))


# --- easeml-automl pick --------------------------------------------------------------------------

def _fresh_rows(path, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", "f2", "shade", "species"])
        for _ in range(rows):
            a, b = rng.normal(size=2)
            w.writerow([round(a, 3), round(b, 3), rng.choice(["dark", "light"]),
                        ["setosa", "versicolor", "virginica"][int(a > 0) + int(b > 0.5)]])
    return str(path)


def test_pick_certifies_the_best_of_a_tenants_trials_on_fresh_data_and_promotes_it(tmp_path, data):
    """A tenant's three trials, a fresh labelled sample in the models' input encoding: the pick
    names the trial that is best on it (not necessarily the validation best) and `--promote`
    promotes exactly that trial through the queue's promotion."""
    import yaml

    from automl_runner.datasets.schema import encode_features, read_columns

    store = f"sqlite:///{tmp_path / 'q.db'}"
    out = tmp_path / "out"
    assert run("submit", data, "--store", store, "--name", "flowers", "--target", "species",
               "--output", out, "--root", tmp_path, "--margin", "0", "--only", "gaussian-nb",
               "--only", "decision-tree-d5", "--only", "logreg-C0.01").exit_code == 0
    assert run("work", "--store", store, "--exit-when-idle", "--poll", "0.05", "--no-promote",
               "--json").exit_code == 0
    schema = infer_schema(data, "species")
    cols = read_columns(_fresh_rows(tmp_path / "fresh.csv", 3000, seed=11))
    X = encode_features(cols, schema).astype(np.float32)
    y = np.asarray(cols["species"]).astype(str)
    np.savez(tmp_path / "fresh.npz", X=X, y=y)
    (tmp_path / ".easeml.yml").write_text(yaml.safe_dump({
        "condition": "n > 0.5 +/- 0.1", "reliability": 0.99,
        "pick": {"reliability": 0.95, "adaptivity": "full", "steps": 4, "candidates": 3}}))
    with open_store(store) as s:
        trials = {t.onnx_path: t for t in s.trials("flowers") if t.status == "done"}
    from easeml_ci.models import OnnxModel

    accuracy = {p: float(np.mean(np.asarray(OnnxModel(p, p).predict(X)).astype(str) == y))
                for p in trials}
    r = run("pick", "flowers", "--store", store, "--testset", tmp_path / "fresh.npz", "--top", 3,
            "--config", tmp_path / ".easeml.yml", "--promote", "--json",
            env={"EASEML_ORDER_KEY": "b3JkZXIta2V5LW9mLXRoZS10ZXN0LXN1aXRlLTMyYnk="})  # the owner's
    assert r.exit_code == 0, r.output  # reading-order secret (a plaintext test set)
    out_json = json.loads(r.stdout)
    assert out_json["pick"]["picked"], out_json  # 3,000 labelled rows settle these three
    best_on_fresh = max(accuracy, key=accuracy.get)
    assert out_json["pick"]["answer"] == best_on_fresh
    assert out_json["picked_trial"] == trials[best_on_fresh].id
    with open_store(store) as s:
        promos = s.promotions("flowers")
    assert [p.trial_id for p in promos] == [trials[best_on_fresh].id]
    assert promos[0].status == "written" and (out / "model.onnx").read_bytes() == \
        open(best_on_fresh, "rb").read()


def test_pick_needs_two_trials_with_models(tmp_path, data):
    store = f"sqlite:///{tmp_path / 'q.db'}"
    assert run("submit", data, "--store", store, "--name", "flowers", "--target", "species",
               "--only", "gaussian-nb").exit_code == 0
    r = run("pick", "flowers", "--store", store, "--testset", tmp_path / "x.npz")
    assert r.exit_code == 2 and "has 0 done trial(s)" in r.stderr
