"""Everything that shapes a verdict is pinned at registration (issue 20, attack 5).

Through the CLI: the owner registers a test set, then a config that changes one term (or drops
a key, so that its default would apply) is refused with exit 2 naming the key, the registered
value and the config's, with nothing written to the ledger. ``--underpowered`` is a permission
the registration pins. A registration made before these terms existed stays valid.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from easeml_ci.cli import main
from easeml_ci.gate.registration import VERDICT_TERMS, pinned_terms
from easeml_ci.config import load_config
from ledger_test_key import KEY as LEDGER_KEY
from easeml_ci.ledger import FileBackend, Ledger

ROWS = 3000
BASE = {"condition": "n > 0.6 +/- 0.1", "reliability": 0.9, "adaptivity": "full", "steps": 4}


class Repo:
    def __init__(self, root: Path):
        self.root = root
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, ROWS)
        np.savez(root / "ts.npz", X=rng.normal(size=(ROWS, 3)).astype(np.float32), y=y)
        np.savez(root / "pool.npz", X=rng.normal(size=(50, 3)).astype(np.float32))
        np.savez(root / "other-pool.npz", X=rng.normal(size=(50, 3)).astype(np.float32))
        good = np.where(rng.random(ROWS) < 0.9, y, 1 - y)
        np.save(root / "good.npy", good)

    def config(self, **values) -> None:
        cfg = {**BASE, **values}
        cfg = {k: v for k, v in cfg.items() if v is not None}
        (self.root / ".easeml.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def run(self, *args, env=None):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    def register(self, *extra, env=None):
        done = self.run("testset", "register", "ts.npz", *extra, env=env)
        assert done.exit_code == 0, done.output
        return done

    def check(self, *extra):
        return self.run("check", "--new", "good.npy", "--testset", "ts.npz", "--json", *extra)

    def entries(self) -> list[dict]:
        files = list((self.root / ".easeml" / "ledger").glob("*.jsonl"))
        return Ledger(FileBackend(self.root / ".easeml" / "ledger"), files[0].stem).entries()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Repo(tmp_path)


HOOK = "https://hooks.example/services/T0/B0/registered-secret"
OTHER = "https://attacker.example/hook"


def _digest(url: str) -> str:  # as the ledger pins a webhook
    import hashlib
    return "sha256:" + hashlib.sha256(url.encode()).hexdigest()[:16]

# (key, the config it was registered under, the config of the check, registered and now shown)
CHANGES = [
    ("name", {}, {"name": "another-gate"}, "'easeml-ci'", "'another-gate'"),
    ("method", {}, {"method": "easeml"}, "'tight'", "'easeml'"),
    ("method", {"method": "easeml"}, {}, "'easeml'", "'tight'"),  # dropping the key
    ("output", {}, {"output": {"threshold": 0.5}}, "None", "{'threshold': 0.5}"),
    ("pool", {"pool": "pool.npz"}, {"pool": "other-pool.npz"}, "'pool.npz'", "'other-pool.npz'"),
    ("pool", {"pool": "pool.npz"}, {}, "'pool.npz'", "None"),
    ("label_column", {}, {"label_column": "y2"}, "'label'", "'y2'"),
    ("alerts.webhook", {"alerts": {"webhook": HOOK}}, {"alerts": {"webhook": OTHER}},
     f"{{webhook: {_digest(HOOK)}, issue: true}}", f"{{webhook: {_digest(OTHER)}, issue: true}}"),
    ("alerts.webhook", {"alerts": {"webhook": HOOK}}, {}, f"{{webhook: {_digest(HOOK)}",
     "{webhook: none"),
    ("alerts.issue", {}, {"alerts": {"issue": False}}, "issue: true}", "issue: false}"),
    ("allow_any_old_model", {}, {"allow_any_old_model": True}, "'base'", "'any'"),
]


@pytest.mark.parametrize("key, registered, now, was, shown", CHANGES,
                         ids=[f"{c[0]}-{'drop' if not c[2] else 'change'}" for c in CHANGES])
def test_a_changed_or_dropped_term_is_refused_naming_key_and_values(repo, key, registered, now,
                                                                    was, shown):
    repo.config(**registered)
    repo.register()
    before = repo.entries()
    repo.config(**now)
    result = repo.check()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr
    assert key in message and "registered with" in message, message
    assert shown in message.split("but test set")[0] and was in message.split("registered with")[1]
    for secret in ("registered-secret", "attacker.example", "hooks.example"):
        assert secret not in result.output  # a webhook shows only as set or none
    assert repo.entries() == before  # nothing written


def test_the_same_terms_check_as_before(repo):
    repo.config(method="easeml", pool="pool.npz", alerts={"issue": False})
    repo.register()
    assert repo.check().exit_code == 0


def test_every_new_registration_pins_the_verdict_terms_defaults_included(repo):
    repo.config()
    repo.register()
    terms = repo.entries()[0]["terms"]
    assert set(VERDICT_TERMS) <= set(terms) and terms["underpowered"] is False
    assert terms["method"] == "tight" and terms["old_model"] == "base"
    assert terms["alerts"] == {"webhook": None, "issue": True}


def test_a_registration_from_before_these_terms_stays_valid(repo):
    """Terms as a registration of the previous release wrote them (no method, output, pool...):
    any value of the new keys checks against it."""
    repo.config(method="easeml", pool="pool.npz", label_column="label")
    cfg = load_config(repo.root / ".easeml.yml")
    old_terms = {k: v for k, v in pinned_terms(cfg).items()
                 if k not in (*VERDICT_TERMS, "underpowered")}
    fingerprint = json.loads(repo.run("testset", "register", "ts.npz", "--json").stdout)[
        "fingerprint"]
    ledger_dir = repo.root / ".easeml" / "ledger"
    for path in ledger_dir.iterdir():
        path.unlink()
    Ledger(FileBackend(ledger_dir), fingerprint, LEDGER_KEY).register(old_terms, by="register")
    assert repo.check().exit_code == 0


# --- underpowered: a permission the registration pins -------------------------------------------

SMALL = {"condition": "n > 0.6 +/- 0.01"}  # needs more than ROWS examples


@pytest.mark.parametrize("mode", ["fp-free", "fn-free"])
def test_underpowered_is_refused_unless_the_registration_allows_it(repo, mode):
    repo.config(mode=mode, **SMALL)
    repo.register("--underpowered")
    assert repo.entries()[0]["terms"]["underpowered"] is True
    assert repo.check("--underpowered").exit_code == 0


@pytest.mark.parametrize("mode", ["fp-free", "fn-free"])
def test_underpowered_on_a_registration_that_does_not_allow_it(repo, mode):
    """Even where the test set is large enough, the flag itself is refused up front."""
    repo.config(mode=mode)
    repo.register()
    before = repo.entries()
    result = repo.check("--underpowered")
    assert result.exit_code == 2, result.output
    assert "--underpowered" in result.stderr and "registered with underpowered false" in \
        result.stderr
    assert repo.entries() == before


@pytest.mark.parametrize("mode, allowed", [("fp-free", True), ("fn-free", False)])
def test_underpowered_on_a_registration_from_before_the_term(repo, mode, allowed):
    """Widening keeps fp-free's guarantee at the threshold, not fn-free's: an old fn-free
    registration (which pinned nothing about it) is refused, an old fp-free one is not."""
    repo.config(mode=mode, **SMALL)
    cfg = load_config(repo.root / ".easeml.yml")
    old_terms = {k: v for k, v in pinned_terms(cfg).items()
                 if k not in (*VERDICT_TERMS, "underpowered")}
    fingerprint = json.loads(repo.run("testset", "register", "ts.npz", "--underpowered",
                                      "--json").stdout)["fingerprint"]
    ledger_dir = repo.root / ".easeml" / "ledger"
    for path in ledger_dir.iterdir():
        path.unlink()
    Ledger(FileBackend(ledger_dir), fingerprint, LEDGER_KEY).register(old_terms, by="register")
    result = repo.check("--underpowered")
    if allowed:
        assert result.exit_code in (0, 1), result.output
    else:
        assert result.exit_code == 2 and "under fn-free" in result.stderr, result.output
        assert [e["kind"] for e in repo.entries()] == ["register"]


def test_a_webhook_in_a_secret_is_pinned_with_alert_webhook_env(repo):
    repo.config()
    unset = repo.run("testset", "register", "ts.npz", "--alert-webhook-env", "NO_SUCH_VAR")
    assert unset.exit_code == 2 and "NO_SUCH_VAR is not set" in unset.stderr
    repo.register("--alert-webhook-env", "HOOK", env={"HOOK": HOOK})
    assert repo.entries()[0]["terms"]["alerts"]["webhook"].startswith("sha256:")
    assert HOOK not in json.dumps(repo.entries())
