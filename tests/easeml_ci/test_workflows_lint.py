"""The workflows and the action this repository ships pass their linters, and keep the rules the
linters cannot see.

zizmor (offline) and actionlint run over action.yml, .github/workflows/ and examples/workflows/
and must report nothing; both come from the `lint` extra (pulled in by the `test` extra, so
`make test` has them). Negative controls show each linter does find what it is meant to find,
so a silent linter cannot pass the test. Every YAML file under examples/ and .github/ is parsed
with yaml.safe_load and its structure checked.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the test extra installs tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml")) + sorted(
    (ROOT / "examples" / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
ALL_YAML = sorted(p for d in ("examples", ".github") for p in (ROOT / d).rglob("*")
                  if p.suffix in (".yml", ".yaml") and p.is_file())
OWN_ACTION = "easeml/easeml-ci@"
PINNED = re.compile(r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$")


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, (f"{name} is not installed: it comes with the lint extra "
                   f"(pip install -e '.[test]' or '.[lint]')")
    return found


def rel(paths) -> list[str]:
    return [str(Path(p).relative_to(ROOT)) for p in paths]


def run_zizmor(paths, config: Path | None = ZIZMOR_CONFIG) -> tuple[int, list, str]:
    args = [tool("zizmor"), "--offline", "--no-progress", "--format", "json"]
    if config is not None:
        args += ["--config", str(config)]
    done = subprocess.run(args + [str(p) for p in paths], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    try:
        findings = json.loads(done.stdout or "[]")
    except ValueError:
        findings = [{"unparsed": done.stdout}]
    return done.returncode, findings, done.stderr


def run_actionlint(paths) -> tuple[int, list, str]:
    args = [tool("actionlint"), "-config-file", str(ACTIONLINT_CONFIG),
            "-shellcheck", tool("shellcheck"), "-pyflakes", "", "-format", "{{json .}}"]
    done = subprocess.run(args + [str(p) for p in paths], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    try:
        findings = json.loads(done.stdout or "[]")
    except ValueError:
        findings = [{"unparsed": done.stdout}]
    return done.returncode, findings, done.stderr


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {k: None for k in on}
    return on or {}


def steps_of(doc: dict) -> list[tuple[str, dict]]:
    if "runs" in doc:
        return [("action", s) for s in doc["runs"].get("steps") or []]
    return [(job_id, s) for job_id, job in (doc.get("jobs") or {}).items()
            for s in job.get("steps") or []]


# --- the linters ----------------------------------------------------------------------------------

def test_zizmor_finds_nothing():
    rc, findings, err = run_zizmor(rel([ACTION, *WORKFLOWS]))
    assert findings == [] and rc == 0, json.dumps(findings, indent=1)[:6000] + err[-2000:]


def test_actionlint_finds_nothing():
    # action.yml is checked through .github/workflows/self-test.yml, which uses it (`uses: ./`)
    rc, findings, err = run_actionlint(rel(WORKFLOWS))
    assert findings == [] and rc == 0, "\n".join(
        f"{f.get('filepath')}:{f.get('line')}: {f.get('message')} [{f.get('kind')}]"
        for f in findings) + err[-2000:]


BAD_WORKFLOW = """\
name: bad
on: pull_request
permissions:
  contents: write
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}" && ls $UNQUOTED_DIR
        env:
          TOKEN: ${{ secrets.DEPLOY_TOKEN }}
"""


def test_the_linters_do_catch_what_the_rules_forbid(tmp_path):
    """Negative control: the same invocation on a workflow that breaks every rule."""
    bad = tmp_path / "bad.yml"
    bad.write_text(BAD_WORKFLOW)
    rc, findings, _ = run_zizmor([bad])
    idents = {f["ident"] for f in findings}
    assert rc != 0
    assert {"unpinned-uses", "artipacked", "template-injection"} <= idents, idents
    problems = structure_problems(yaml.safe_load(BAD_WORKFLOW))
    assert "workflow-level permissions must be {}" in problems
    assert "build: reads secrets outside an environment" in problems
    rc, findings, _ = run_actionlint([bad])
    kinds = {f["kind"] for f in findings}
    assert rc != 0
    assert "expression" in kinds, kinds                 # untrusted input in an inline script
    assert "shellcheck" in kinds, kinds                  # SC2086: shellcheck really runs


# --- every YAML file parses and has the shape of what it is ---------------------------------------

@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path):
    doc = load(path)
    assert isinstance(doc, dict) and doc, f"{path}: not a mapping"


def structure_problems(wf) -> list[str]:
    """What is wrong with a parsed workflow's shape, including two rules zizmor checks only
    under its auditor persona: write permissions at workflow level, secrets outside an
    environment."""
    if not isinstance(wf, dict):
        return ["not a mapping"]
    out = []
    if not (isinstance(wf.get("name"), str) and wf["name"]):
        out.append("no name")
    if not triggers(wf):
        out.append("no trigger")
    if wf.get("permissions") != {}:  # nothing by default: each job says what it needs
        out.append("workflow-level permissions must be {}")
    jobs = wf.get("jobs")
    if not (isinstance(jobs, dict) and jobs):
        return out + ["no jobs"]
    for job_id, job in jobs.items():
        if "runs-on" not in job or not (isinstance(job.get("steps"), list) and job["steps"]):
            out.append(f"{job_id}: no runs-on or no steps")
            continue
        if "permissions" not in job:
            out.append(f"{job_id}: does not state its permissions")
        if not isinstance(job.get("timeout-minutes"), int):
            out.append(f"{job_id}: no timeout-minutes")
        needs = job.get("needs") or []
        out += [f"{job_id}: needs unknown job {n}"
                for n in ([needs] if isinstance(needs, str) else needs) if n not in jobs]
        out += [f"{job_id}: a step needs exactly one of uses/run: {step}"
                for step in job["steps"] if ("uses" in step) == ("run" in step)]
        if "${{ secrets." in yaml.safe_dump(job, width=10**6) and not job.get("environment"):
            out.append(f"{job_id}: reads secrets outside an environment")
    return out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_structure(path):
    assert structure_problems(load(path)) == []


def test_action_structure():
    action = load(ACTION)
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert "default" in spec or spec.get("required"), name
    for _, step in steps_of(action):
        assert ("uses" in step) != ("run" in step)
        if "run" in step:
            assert step.get("shell") == "bash"


ALL_STEPS = [(path, job, step) for path in [ACTION, *WORKFLOWS] for job, step in steps_of(load(path))]


def _step_id(item) -> str:
    path, job, step = item
    return f"{path.relative_to(ROOT)}:{job}:{step.get('id') or step.get('name') or step.get('uses')}"


@pytest.mark.parametrize("item", ALL_STEPS, ids=map(_step_id, ALL_STEPS))
def test_no_expression_in_a_shell_line(item):
    _, _, step = item
    assert "${{" not in str(step.get("run", "")), "pass it through env:"


def test_every_action_is_pinned_to_a_commit_with_its_version():
    pins: dict[str, set] = {}
    for path in [ACTION, *WORKFLOWS]:
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:- )?uses:\s*(.+?)\s*$", line)
            if not m:
                continue
            ref = m.group(1).split(" # zizmor:")[0].strip()
            if ref.startswith("./") or ref.startswith(OWN_ACTION):
                continue  # this checkout; this project's own release tag (see .github/zizmor.yml)
            pin = PINNED.match(ref)
            assert pin, f"{path.name}: `{ref}` is not `owner/repo@<40-hex sha> # vX.Y.Z`"
            pins.setdefault(pin.group(1), set()).add((pin.group(2), pin.group(3)))
    # one version of each action across the repository
    assert all(len(v) == 1 for v in pins.values()), pins
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact",
            "actions/download-artifact"} <= set(pins)


def test_every_checkout_drops_its_credentials():
    for path, job, step in ALL_STEPS:
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert (step.get("with") or {}).get("persist-credentials") is False, f"{path.name}:{job}"


def test_ci_runs_the_suite_and_both_linters_with_the_lint_extras_pins():
    wf = load(ROOT / ".github/workflows/ci.yml")
    assert set(triggers(wf)) == {"push", "pull_request"}
    runs = [s.get("run", "") for _, s in steps_of(wf)]
    assert "make test" in runs
    assert any(r.startswith("zizmor --offline --config .github/zizmor.yml action.yml") for r in runs)
    assert any(r.startswith("actionlint -config-file .github/actionlint.yaml") for r in runs)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = next(r for r in runs if "pip install" in r)
    assert sorted(re.findall(r"[a-z][\w.-]*==[\w.]+", install)) == sorted(extras["lint"])
    assert any("easeml-ci[lint]" in req for req in extras["test"])


# --- examples/workflows/automl-worker.yml (issue 12 item 6) ----------------------------------------

def test_automl_worker_installs_the_pinned_release_and_keeps_its_secrets_off_command_lines():
    path = ROOT / "examples/workflows/automl-worker.yml"
    wf, text = load(path), path.read_text()
    job = wf["jobs"]["work"]
    steps = job["steps"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # the release, with its AutoML extra, pinned to this project's version by its tag in the
    # repository (easeml-ci is not on the package index); no checkout of the user's repository
    assert job["env"]["EASEML_CI_REF"] == f"v{version}"
    install = next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    assert '"easeml-ci[automl,gpu] @ git+https://github.com/easeml/easeml-ci@$EASEML_CI_REF"' in install
    assert not any(str(s.get("uses", "")).startswith("actions/checkout") for s in steps)
    assert "install ." not in text and "install -e" not in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "automl" in extras
    # secrets: from the environment, through env, never on a command line
    assert job["environment"] and job["permissions"] == {}
    for step in steps:
        assert "--store" not in step.get("run", "") and "secrets." not in step.get("run", "")
    work = next(s for s in steps if "easeml-automl\" work" in s.get("run", "")
                or "easeml-automl work" in s.get("run", ""))
    assert work["env"]["EASEML_AUTOML_STORE"] == "${{ secrets.EASEML_AUTOML_STORE }}"
    assert "github.event.inputs" not in text
    assert work["env"]["MAX_TRIALS"] == "${{ inputs.max_trials || 50 }}"


@pytest.mark.parametrize("value,ok", [("50", True), ("1", True), ("10000", True),
                                      ("0", False), ("007", False), ("10001", False),
                                      ("", False), ("5; id", False), ("$(id)", False),
                                      ("99999999999999999999", False), ("1e3", False)])
def test_automl_worker_validates_max_trials_as_a_whole_number(tmp_path, value, ok):
    """The step's own shell, run for real with a stand-in easeml-automl that records its argv."""
    wf = load(ROOT / "examples/workflows/automl-worker.yml")
    work = next(s for s in wf["jobs"]["work"]["steps"] if "--max-trials" in s.get("run", ""))
    bin_dir = tmp_path / "easeml-automl" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "easeml-automl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RUNNER_TEMP/argv"\n')
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "RUNNER_TEMP": str(tmp_path), "MAX_TRIALS": value,
           "WORKER_ID": "runner-1-gpu0", "EASEML_AUTOML_STORE": "postgresql://u:secret@h/db"}
    done = subprocess.run(["bash", "-e", "-c", work["run"]], env=env, capture_output=True,
                          text=True, timeout=30)
    argv = (tmp_path / "argv").read_text().split("\n") if (tmp_path / "argv").exists() else None
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
        assert argv[argv.index("--max-trials") + 1] == value
        assert not any("secret" in a for a in argv)  # the store URL stays in the environment
    else:
        assert done.returncode == 2 and argv is None
        assert "max_trials must be a whole number" in done.stdout


# --- the fork-safe pair (issue 12 item 5) -----------------------------------------------------------

FORK_SAFE = ROOT / "examples/workflows/easeml-gate-fork-safe.yml"
UNTRUSTED = ROOT / "examples/workflows/easeml-model.yml"


def test_the_untrusted_half_only_uploads_data():
    wf = load(UNTRUSTED)
    assert set(triggers(wf)) == {"pull_request"}
    [job] = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read"} and "environment" not in job
    assert "secrets." not in yaml.safe_dump(wf)
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact@") for s in job["steps"])


def test_the_trusted_half_checks_the_event_checks_out_the_base_and_posts_a_status():
    wf = load(FORK_SAFE)
    on = triggers(wf)
    assert set(on) == {"workflow_run"}
    assert on["workflow_run"]["workflows"] == [load(UNTRUSTED)["name"]]
    pre, gate = wf["jobs"]["preflight"], wf["jobs"]["gate"]
    assert "github.event.workflow_run.event == 'pull_request'" in pre["if"]
    assert "github.event.workflow_run.conclusion == 'success'" in pre["if"]
    assert gate["needs"] == "preflight"
    # the job that parses the fork's file first holds no key, no checkout, a read-only token
    assert "environment" not in pre and pre["permissions"] == {"actions": "read"}
    assert "secrets." not in yaml.safe_dump(pre)
    assert not any(str(s.get("uses", "")).startswith("actions/checkout@") for s in pre["steps"])
    # the keyed job: an environment, the base branch only, the file the preflight hashed
    assert gate["environment"] == "easeml-gate"
    assert gate["permissions"]["statuses"] == "write"
    checkout = next(s for s in gate["steps"] if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert "ref" not in checkout["with"] and "repository" not in checkout["with"]
    assert "head_sha" not in yaml.safe_dump(checkout)
    assert any("sha256sum --check" in s.get("run", "") for s in gate["steps"])
    step = next(s for s in gate["steps"] if str(s.get("uses", "")).startswith(OWN_ACTION))
    w = step["with"]
    assert w["head-sha"] == "${{ github.event.workflow_run.head_sha }}"
    assert w["pr-number"] == "${{ needs.preflight.outputs.pr-hint }}"
    assert w["commit-status"] == "true" and w["config-from-base"] == "false"
    assert w["testset-key"] == "${{ secrets.EASEML_TESTSET_KEY }}"
    assert "pull_request_target" not in "\n".join(
        line for line in FORK_SAFE.read_text().splitlines() if not line.lstrip().startswith("#"))


def test_examples_use_only_inputs_the_action_declares():
    declared = set(load(ACTION)["inputs"])
    for path in WORKFLOWS:
        for _, step in steps_of(load(path)):
            if str(step.get("uses", "")).startswith(OWN_ACTION) or step.get("uses") == "./":
                assert set(step.get("with") or {}) <= declared, (path.name, step["with"])


def test_the_readmes_workflows_pass_both_linters(tmp_path):
    """The quick start's two workflows, as the README prints them (compact, not the examples'
    text), under the file names it gives them."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n# \.github/workflows/([\w.-]+\.yml)\b.*?\n(.*?)```", readme, re.S)
    assert sorted(name for name, _ in blocks) == ["easeml-gate-fork-safe.yml", "easeml-model.yml"]
    assert any("easeml/easeml-ci@" in text and "jobs:" in text for _, text in blocks)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    paths = []
    for name, text in blocks:
        paths.append(tmp_path / ".github" / "workflows" / name)
        paths[-1].write_text(text)
    rc, findings, err = run_zizmor(paths)
    assert findings == [] and rc == 0, json.dumps(findings, indent=1)[:4000] + err[-1000:]
    rc, findings, err = run_actionlint(paths)
    assert findings == [] and rc == 0, [f.get("message") for f in findings]


def test_the_preflight_step_runs_python_that_compiles():
    """The keyless job's inline script (it needs easeml_ci.models.preflight from the release)."""
    step = next(s for s in load(FORK_SAFE)["jobs"]["preflight"]["steps"]
                if s.get("name") == "Preflight on synthetic input")
    script = step["run"].split("<<'PY'\n", 1)[1].rsplit("\nPY", 1)[0]
    compile(script, "preflight-step", "exec")
    assert "from easeml_ci.models import preflight" in script
    assert "annotate(sys.stdout, \"error\", exc.message" in script  # escaped workflow command
