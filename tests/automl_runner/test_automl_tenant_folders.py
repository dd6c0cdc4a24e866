"""A tenant's files stay in the tenant's folder, its pull requests go only to its registered
repository, and a mistyped store is never created behind the user's back.

Attacks replayed: a tenant's ``--output`` naming a folder outside the tenants' root (directly, by
``..``, or through a symbolic link), or another tenant's folder; a link planted in the folder
after submit (the folder itself, ``model.onnx``, the lock, ``trials/``); a store row pointing
outside a worker's root; a ``--model-path`` into ``.git`` or ``.github`` in another spelling; a
``--replace`` that moves the pull requests to another repository; a repository renamed or
transferred (GitHub answers under another name) or deleted and created again (another id); a
folder of the model path committed as a symbolic link.
"""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from automl_runner.candidates.catalogue import default_catalogue
from automl_runner.cli import main
from automl_runner.datasets.schema import infer_schema, load_dataset
from automl_runner.errors import TenantError
from automl_runner.folders import FolderError, TenantFolder, check_output
from automl_runner.store import open_store
from automl_runner.worker.promote import maybe_promote
from test_automl_cli import _fit, data, github  # noqa: F401  (fixtures: the dataset, the fake GitHub)


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def submit(data, store, *extra, name="flowers", env=None):
    return invoke("submit", data, "--store", store, "--name", name, "--target", "species", "--only", "gaussian-nb",
                  *extra, env=env)


# --- submit: the folder lies inside the tenants' root, and is the tenant's own ------------------


@pytest.mark.parametrize("output", ["/etc/easeml-out", "../outside", "root/../../outside", "link/out"])
def test_an_output_outside_the_tenants_root_is_refused_before_anything_is_written(tmp_path, data, output,
                                                                                  monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")  # inside the root by name, outside by where it leads
    monkeypatch.chdir(root)
    r = submit(data, tmp_path / "q.db", "--output", output)
    assert r.exit_code == 2, r.output
    assert f"--output {output!r}" in r.output and f"outside the tenants' root {root}" in r.output
    assert "the current directory; set --root or EASEML_AUTOML_ROOT" in r.output
    if output == "link/out":
        assert f"resolves to {tmp_path / 'elsewhere' / 'out'} (a symbolic link on the way)" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "q.db").exists()  # nothing registered, no store created
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_root_comes_from_the_option_then_the_environment_then_the_current_directory(tmp_path, data,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "q.db"
    assert submit(data, store, "--output", "out", name="a").exit_code == 0  # inside the current directory
    outside = tmp_path.parent / f"{tmp_path.name}-shared"
    r = submit(data, store, "--output", outside / "b", name="b")
    assert r.exit_code == 2 and "outside the tenants' root" in r.output
    r = submit(data, store, "--output", outside / "b", name="b", env={"EASEML_AUTOML_ROOT": str(outside)})
    assert r.exit_code == 0, r.output
    r = submit(data, store, "--output", outside / "c", "--root", outside / "c", name="c")
    assert r.exit_code == 0, r.output
    r = submit(data, store, "--output", tmp_path / "d", "--root", outside, name="d")
    assert r.exit_code == 2 and f"outside the tenants' root {outside} (--root)" in r.output
    with open_store(store) as s:
        assert {t.name: t.output for t in s.tenants()} == {
            "a": str(tmp_path / "out"), "b": str(outside / "b"), "c": str(outside / "c")}


@pytest.mark.parametrize("other", ["out", "out/inner", "."])
def test_an_output_that_is_holds_or_lies_in_another_tenants_folder_is_refused(tmp_path, data, other, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "q.db"
    assert submit(data, store, "--output", "out", name="first").exit_code == 0
    r = submit(data, store, "--output", other, name="second")
    assert r.exit_code == 2, r.output
    assert f"tenant 'first' writes to {tmp_path / 'out'}; each tenant's output folder must be its own" in r.output
    # the tenant itself may be resubmitted with its own folder
    assert submit(data, store, "--output", "out", "--replace", name="first").exit_code == 0


def test_check_output_resolves_links_and_dots(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert check_output(tmp_path / "alias" / "x", tmp_path) == str(tmp_path / "real" / "x")
    assert check_output(tmp_path / "a" / ".." / "b", tmp_path) == str(tmp_path / "b")
    with pytest.raises(FolderError):
        check_output(tmp_path / ".." / "x", tmp_path)


# --- the worker: never through a link, never outside its root ------------------------------------


def _promote(s, tenant, schema, ds, score=0.7, **kw):
    cand, blob = _fit(schema, ds, "gaussian-nb")
    c = s.try_claim(tenant.name, "gaussian-nb", "w", "cpu")
    s.complete(c, "w", score, 0.1, None, None)
    return maybe_promote(s, tenant, c.trial_id, cand, blob, score, **kw), blob


@pytest.mark.parametrize("planted", ["folder", "model.onnx", "model-card.json", ".promote.lock", "parent"])
def test_a_link_planted_in_the_tenants_folder_after_submit_is_never_followed(tmp_path, data, planted):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "precious"
    victim.write_bytes(b"do not touch")
    out = tmp_path / "tenants" / "flowers"
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), output=str(out), only=["gaussian-nb"])
        tenant = s.tenant("flowers")
        if planted == "folder":
            (tmp_path / "tenants").mkdir()
            out.symlink_to(victim_dir)
        elif planted == "parent":
            (tmp_path / "tenants").symlink_to(victim_dir)
        else:
            out.mkdir(parents=True)
            (out / planted).symlink_to(victim)
        p, blob = _promote(s, tenant, schema, ds)
    assert victim.read_bytes() == b"do not touch"
    if planted == "model.onnx":  # written over: the link is replaced by the file, not followed
        assert p.status == "written", p.message
        assert not (out / planted).is_symlink() and (out / "model.onnx").read_bytes() == blob
    else:  # read or opened in place (the card, the lock) or on the way: refused
        assert p.status == "write-failed"
        assert "is a symbolic link or not a folder" in p.message and "nothing written" in p.message
        assert sorted(os.listdir(victim_dir)) == ["precious"]


def test_a_worker_writes_no_trial_model_through_a_planted_link_and_the_trial_fails_saying_why(tmp_path, data):
    store = f"sqlite:///{tmp_path / 'q.db'}"
    out = tmp_path / "out"
    assert submit(data, store, "--output", out, "--root", tmp_path).exit_code == 0
    (tmp_path / "victim").mkdir()
    out.mkdir()
    (out / "trials").symlink_to(tmp_path / "victim")
    r = invoke("work", "--store", store, "--once", "--json")
    assert r.exit_code == 0, r.output
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert line["status"] == "failed"
    assert "cannot write the trial's model" in line["error"] and "is a symbolic link or not a folder" in line["error"]
    assert list((tmp_path / "victim").iterdir()) == []


def test_a_worker_with_a_root_refuses_a_tenant_folder_the_store_records_outside_it(tmp_path, data):
    """A tenant that can write the store could record any folder; the worker's root still holds."""
    store = f"sqlite:///{tmp_path / 'q.db'}"
    schema = infer_schema(data, "species")
    with open_store(store) as s:  # straight into the store: no submit-time check
        s.add_tenant("flowers", data, schema, default_catalogue(), output=str(tmp_path / "runner-home"),
                     only=["gaussian-nb"])
    (tmp_path / "tenants").mkdir()
    r = invoke("work", "--store", store, "--once", "--json", env={"EASEML_AUTOML_ROOT": str(tmp_path / "tenants")})
    assert r.exit_code == 0, r.output
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert line["status"] == "failed"
    assert f"lies outside this worker's root {tmp_path / 'tenants'}" in line["error"]
    assert not (tmp_path / "runner-home").exists()
    # the same worker writes a folder inside its root
    with TenantFolder(str(tmp_path / "tenants" / "t"), root=str(tmp_path / "tenants")) as f:
        assert f.folder("trials").write("m.onnx", b"x") == str(tmp_path / "tenants" / "t" / "trials" / "m.onnx")
    assert (tmp_path / "tenants" / "t" / "trials" / "m.onnx").read_bytes() == b"x"


# --- the repository: the model path, and only the registered repository -------------------------


@pytest.mark.parametrize("model_path", [".GitHub/workflows/x.yml", ".github./workflows/x.yml", "sub/.git/config",
                                        "sub/.GIT /hooks/post-merge", "models/m\x00.onnx", "models\\..\\..\\x.onnx"])
def test_a_model_path_into_git_or_workflows_in_any_spelling_is_refused(tmp_path, data, model_path):
    r = submit(data, tmp_path / "q.db", "--repository", "acme/models", "--model-path", model_path)
    assert r.exit_code == 2, r.output
    assert f"--model-path {model_path!r}: expected a relative path inside the repository" in r.output


def test_a_replace_cannot_move_a_tenants_pull_requests_to_another_repository(tmp_path, data, github):
    store = tmp_path / "q.db"
    assert submit(data, store, "--repository", "acme/models").exit_code == 0
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(store) as s:
        p, _ = _promote(s, s.tenant("flowers"), schema, ds)
        assert p.status == "pr-opened", p.message
    for other in (["--repository", "evil/models"], []):
        r = submit(data, store, "--replace", *other)
        assert r.exit_code == 2, r.output
        assert "tenant 'flowers' is registered with repository acme/models; its pull requests go only there" in r.output
    assert submit(data, store, "--replace", "--repository", "acme/models").exit_code == 0  # the same one: fine
    with open_store(store) as s:
        assert s.tenant("flowers").repository == "acme/models"
        assert s.pin_repository("flowers", 999) == github.repo_id  # the pinned id survived the resubmit


@pytest.mark.parametrize("change", ["transferred", "recreated"])
def test_a_promotion_goes_only_to_the_repository_the_tenant_registered(tmp_path, data, github, change):
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), repository="acme/models",
                     only=["gaussian-nb", "lda"], margin=0.0)
        tenant = s.tenant("flowers")
        first, _ = _promote(s, tenant, schema, ds, 0.6)
        assert first.status == "pr-opened"
        files, pulls = dict(github.files), [dict(p) for p in github.pulls]
        if change == "transferred":  # GitHub redirects the old name to the new owner
            github.answers_as = "evil/models"
        else:  # deleted, and a namesake created by someone else
            github.repo_id = 31337
        cand, blob = _fit(schema, ds, "lda")
        c = s.try_claim("flowers", "lda", "w", "cpu")
        s.complete(c, "w", 0.9, 0.1, None, None)
        p = maybe_promote(s, tenant, c.trial_id, cand, blob, 0.9)
    assert p.status == "pr-failed" and "refused" in p.message
    assert ("evil/models" in p.message) if change == "transferred" else ("id 31337" in p.message and "id 4242" in p.message)
    assert github.files == files and github.pulls == pulls  # nothing written, no pull request changed


def test_a_model_path_whose_folder_is_a_link_on_the_branch_is_refused(tmp_path, data, github):
    github.refs["easeml-automl/flowers"] = "c0ffee"
    github.symlinks.add(("easeml-automl/flowers", "models"))
    schema = infer_schema(data, "species")
    ds = load_dataset(data, schema)
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("flowers", data, schema, default_catalogue(), repository="acme/models", only=["gaussian-nb"])
        p, _ = _promote(s, s.tenant("flowers"), schema, ds)
    assert p.status == "pr-failed"
    assert "models on easeml-automl/flowers is a symlink, not a folder" in p.message
    assert github.files == {} and github.pulls == []


def test_store_api_refuses_a_shared_folder_too(tmp_path, data):
    schema = infer_schema(data, "species")
    with open_store(tmp_path / "q.db") as s:
        s.add_tenant("a", data, schema, default_catalogue(), output=str(tmp_path / "out"), only=["lda"])
        with pytest.raises(TenantError, match="tenant 'a' writes to"):
            s.add_tenant("b", data, schema, default_catalogue(), output=str(tmp_path / "out" / "b"), only=["lda"])
