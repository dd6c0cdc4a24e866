"""New-test-set alerts: webhook retries with backoff, once per event, and the pool label request."""
from __future__ import annotations

import csv
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

from easeml_ci.gate import alert as alerts
from easeml_ci.cli import main
from easeml_ci.http import HttpRetry
from easeml_ci.ledger import FileBackend, Ledger

from test_check import Gate
from ledger_test_key import KEY as LEDGER_KEY  # noqa: E402


class Hook:
    """A webhook on 127.0.0.1 answering from a script of status codes (then 200 forever)."""

    def __init__(self, script=(), headers=None):
        self.script = list(script)
        self.headers = headers or {}
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                status = hook.script.pop(0) if hook.script else 200
                self.send_response(status)
                for key, value in hook.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(*args, **kwargs):
        hooks.append(Hook(*args, **kwargs))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


# --- post_json: the one HTTP policy on a webhook ------------------------------------------------
def policy(sleeps, total=4):
    return HttpRetry(total, sleep=sleeps.append)


def test_a_5xx_is_not_resent_because_the_alert_may_have_arrived(hook_factory):
    hook = hook_factory([503])
    sleeps = []
    delivered, detail = alerts.post_json(hook.url, {"text": "x"}, policy=policy(sleeps))
    assert not delivered and detail.startswith("HTTP 503 from 127.0.0.1:") and "may have arrived" in detail
    assert len(hook.bodies) == 1 and sleeps == []


def test_honours_retry_after_on_429(hook_factory):
    hook = hook_factory([429, 429], headers={"Retry-After": "3"})
    sleeps = []
    delivered, _ = alerts.post_json(hook.url, {"text": "x"}, policy=policy(sleeps))
    assert delivered and sleeps == [3.0, 3.0] and len(hook.bodies) == 3


def test_a_retry_after_beyond_the_bound_is_not_waited_for(hook_factory):
    hook = hook_factory([429], headers={"Retry-After": "3600"})
    sleeps = []
    delivered, detail = alerts.post_json(hook.url, {"text": "x"}, policy=policy(sleeps))
    assert not delivered and detail.startswith("HTTP 429") and sleeps == []


def test_does_not_retry_a_client_error(hook_factory):
    hook = hook_factory([400])
    sleeps = []
    delivered, detail = alerts.post_json(hook.url, {"text": "x"}, policy=policy(sleeps))
    assert not delivered and detail.startswith("HTTP 400 from 127.0.0.1:")
    assert len(hook.bodies) == 1 and sleeps == []


def test_connection_errors_are_bounded(hook_factory):
    hook = hook_factory()
    url = hook.url
    hook.close()  # nothing listens there any more
    sleeps = []
    delivered, detail = alerts.post_json(url, {"text": "x"}, policy=policy(sleeps, total=3))
    assert not delivered and detail == f"ConnectionError: no connection to {url.split('/')[2]}"
    assert sleeps == [2.0, 4.0]  # urllib3's backoff: 0, then 2, 4 (4 tries)


# --- ranking the pool ------------------------------------------------------------------------------
def test_rank_pool_puts_disagreements_first_and_keeps_order_within_groups(tmp_path):
    new = np.array([0, 1, 1, 0, 1])
    old = np.array([0, 0, 1, 1, 1])
    order, disagree = alerts.rank_pool(new, old, 5)
    assert order.tolist() == [1, 3, 0, 2, 4]
    path = alerts.write_label_request_csv(tmp_path / "req.csv", order, disagree, labels_needed=3)
    rows = list(csv.DictReader(open(path)))
    assert [r["pool_index"] for r in rows] == ["1", "3", "0", "2", "4"]
    assert [r["models_disagree"] for r in rows] == ["1", "1", "0", "0", "0"]
    assert [r["label_now"] for r in rows] == ["1", "1", "1", "0", "0"]


# --- end to end: once per event -------------------------------------------------------------------
@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Gate(tmp_path)


def _alert_entries(gate):
    return [e for e in gate.entries() if e["kind"].startswith("alert")]


def test_webhook_gets_the_alert_once_per_event(gate, hook_factory):
    hook = hook_factory()
    gate.config(steps=1, alerts={"webhook": hook.url})
    assert gate.check("good.npy").exit_code == 0  # spends the only step: alert now
    for _ in range(2):
        result = gate.check("good.npy")
        assert result.exit_code == 3 and "NEW TEST SET NEEDED" in result.stdout
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert "has no steps left" in body["text"] and "Label request:" in body["text"]
    request = body["easeml_ci"]["label_request"]
    assert request["test_examples"] > 0 and request["condition"] == "n > 0.6 +/- 0.1"
    assert body["easeml_ci"]["event"] == "exhausted"
    assert [(e["kind"], e.get("delivered")) for e in _alert_entries(gate)] == \
        [("alert", None), ("alert-result", True)]


def test_a_failed_delivery_is_retried_by_the_next_check(gate, hook_factory):
    hook = hook_factory([500])  # the POST is not resent at once: it may have arrived
    gate.config(steps=1, alerts={"webhook": hook.url})
    first = gate.check("good.npy")
    assert first.exit_code == 0 and "webhook: NOT delivered (HTTP 500 from 127.0.0.1:" in first.stdout
    assert gate.check("good.npy").exit_code == 3
    assert gate.check("good.npy").exit_code == 3
    assert len(hook.bodies) == 2  # one failed try, then one delivery, then nothing
    assert [e.get("delivered") for e in _alert_entries(gate) if e["kind"] == "alert-result"] == \
        [False, True]


def test_retired_alert_and_budget_in_json(gate):
    gate.config(adaptivity="firstChange")
    gate.check("good.npy")
    out = json.loads(gate.check("good.npy", "--json").stdout)
    assert out["alert"]["event"] == "retired"
    assert "was retired" in out["alert"]["text"]


# --- the pool label request with real ONNX models -----------------------------------------------------
@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.3).astype(np.int64)
    models = {"old": DecisionTreeClassifier(max_depth=1).fit(X[:1000], y[:1000]),
              "new": LogisticRegression().fit(X[:1000], y[:1000])}
    for name, model in models.items():
        onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
        (root / f"{name}.onnx").write_bytes(onx.SerializeToString())
    np.savez(root / "ts.npz", X=X[1000:], y=y[1000:])
    pool = rng.normal(size=(300, 3)).astype(np.float32)
    np.savez(root / "pool.npz", X=pool)
    disagree = models["new"].predict(pool) != models["old"].predict(pool)
    return root, disagree


def test_label_request_csv_ranks_pool_disagreements_first(tmp_path, monkeypatch, onnx_models):
    root, disagree = onnx_models
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".easeml.yml").write_text(
        "condition: d < 0.5 +/- 0.1\nreliability: 0.9\nsteps: 1\n"
        f"pool: {root / 'pool.npz'}\n")
    result = CliRunner().invoke(main, ["check", "--json", "--new", str(root / "new.onnx"),
                                       "--old", str(root / "old.onnx"),
                                       "--testset", str(root / "ts.npz")])
    assert result.exit_code == 0, result.output
    alert = json.loads(result.stdout)["alert"]
    path = alert["label_request"]["pool_csv"]
    assert path.endswith(".csv") and "disagree come first" in alert["text"]
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 300 and 0 < disagree.sum() < 300
    flags = [int(r["models_disagree"]) for r in rows]
    assert flags == sorted(flags, reverse=True)  # all disagreements before any agreement
    assert {int(r["pool_index"]) for r in rows if r["models_disagree"] == "1"} == \
        set(np.flatnonzero(disagree).tolist())
    assert f"{int(disagree.sum())} of 300 pool examples are disagreements" in alert["text"]


def test_dispatch_without_webhook_records_the_printed_alert(tmp_path):
    ledger = Ledger(FileBackend(tmp_path), "ef" * 32, LEDGER_KEY)
    alert = {"event": "exhausted", "text": "t"}
    assert alerts.dispatch(dict(alert), ledger, None)["delivery"]["delivered"] is True
    assert alerts.dispatch(dict(alert), ledger, None)["delivery"]["sent"] is False


def test_private_sink_webhook_receives_the_withheld_verdict(gate, hook_factory):
    hook = hook_factory()
    gate.config(adaptivity="none", private_sink=hook.url)
    result = gate.check("bad.npy", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["verdict"] == "withheld"
    assert [(b["verdict"], b["step"]) for b in hook.bodies] == [("fail", 1)]
    assert "127.0.0.1" in json.loads(result.stdout)["private_sink"]


def test_private_sink_webhook_failure_says_the_step_was_spent(gate, hook_factory):
    hook = hook_factory([403])
    gate.config(adaptivity="none", private_sink=hook.url)
    result = gate.check("good.npy")
    assert result.exit_code == 2
    assert "private_sink: step recorded, but the webhook did not take the verdict (HTTP 403 from " \
        in result.stderr
    assert "PASS" not in result.stdout and len(gate.steps()) == 1


# --- no secret written anywhere: a webhook URL's path is its secret ---------------------------------
SECRET = "s3cr3tW3bh00kT0ken"
REPO = "acme/models"


def _secret_url(port: int | str) -> str:
    return f"http://127.0.0.1:{port}/services/T0A1B2C3D/B0A1B2C3D/{SECRET}"


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for part in (SECRET, "/services/", "T0A1B2C3D", "B0A1B2C3D"):
            assert part not in text


def test_dispatch_redacts_whatever_the_transport_said(tmp_path):
    # the text requests puts in its ConnectionError: it names the path, i.e. the secret
    raw = (f"ConnectionError: HTTPConnectionPool(host='hooks.example', port=443): Max retries "
           f"exceeded with url: /services/T0A1B2C3D/B0A1B2C3D/{SECRET} (Caused by "
           f"NewConnectionError('refused'))")
    ledger = Ledger(FileBackend(tmp_path), "ef" * 32, LEDGER_KEY)
    alert = alerts.dispatch({"event": "exhausted", "text": "t"}, ledger,
                            _secret_url(443).replace("127.0.0.1", "hooks.example"),
                            post=lambda url, payload: (False, raw))
    entry = ledger.entries()[-1]
    assert entry["kind"] == "alert-result" and "Max retries exceeded" in entry["detail"]
    _assert_clean(json.dumps(entry), json.dumps(alert))


@pytest.mark.parametrize("where", ["file", "repository"])
@pytest.mark.parametrize("failure", ["connection refused", "HTTP 500"])
def test_a_failing_webhook_leaves_no_part_of_its_path_anywhere(
        gate, hook_factory, fake_github, monkeypatch, caplog, where, failure):
    import easeml_ci.http
    from easeml_ci.github.alert_issue import upsert_alert_issue
    from easeml_ci.github.api import GitHubClient

    monkeypatch.setattr(easeml_ci.http.time, "sleep", lambda _s: None)  # the connection retries
    hook = hook_factory([500, 500])
    port = hook.url.split(":")[2].split("/")[0]
    if failure == "connection refused":
        hook.close()
    fake_github.add_repo(REPO)
    fake_github.add_token("tok")
    env = {"GITHUB_TOKEN": "tok", "GITHUB_API_URL": fake_github.url}
    ledger = {"backend": "github", "repository": REPO} if where == "repository" else None
    gate.config(steps=1, alerts={"webhook": _secret_url(port)}, ledger=ledger)
    caplog.set_level(logging.DEBUG)

    first = gate.check("good.npy", "--json", env=env)
    assert first.exit_code == 0, first.output
    alert = json.loads(first.stdout)["alert"]
    assert alert["delivery"]["delivered"] is False
    refused = gate.check("good.npy", env=env)  # exit 3: the alert again, delivery tried again
    assert refused.exit_code == 3 and "webhook: NOT delivered" in refused.stdout

    if where == "file":
        recorded = "".join(p.read_text() for p in (gate.root / ".easeml" / "ledger").glob("*"))
    else:
        name = f"ledger/{alert['testset']}.jsonl"
        recorded = fake_github.file_on_branch(REPO, "easeml-ledger", name).decode()
    assert recorded.count('"kind":"alert-result"') == 2 and '"delivered":false' in recorded
    assert ("no connection to 127.0.0.1" if failure == "connection refused" else "HTTP 500") in recorded
    issue = upsert_alert_issue(GitHubClient("tok", fake_github.url), REPO, alert, gate="g",
                               fingerprint=alert["testset"])
    body = fake_github.issues_of(REPO)[0]["body"]
    assert issue.action == "created"
    _assert_clean(first.stdout, first.stderr, refused.stdout, refused.stderr, recorded,
                  json.dumps(alert), body, caplog.text)
