"""Run ``action.yml`` as a GitHub runner would, without GitHub.

The harness reads the composite action, builds the contexts a runner provides (``inputs`` with
their defaults, ``github``, ``runner``, ``steps``), and executes each step:

* ``uses: actions/setup-python`` is replaced by the current interpreter (its ``python-path``
  output is ``sys.executable``);
* the step with id ``install`` (venv + ``pip install``) is replaced by this checkout's
  virtual environment: its ``bin`` output is either the venv's own ``bin`` (``bin_dir=VENV_BIN``,
  the real console script) or, by default, a directory whose ``easeml-ci`` forks from a
  pre-imported interpreter (see :class:`Zygote`; same entry point, a process per command);
* every other ``run:`` step is executed for real with ``bash --noprofile --norc -eo pipefail``,
  its ``env:`` mapping resolved by a tiny ``${{ }}`` evaluator (inputs, github, runner, steps,
  env contexts; literals; ``||`` and ``&&``), its own ``$GITHUB_OUTPUT`` file (parsed as the
  runner does), the shared ``$GITHUB_STEP_SUMMARY``, ``GITHUB_EVENT_PATH`` pointing at a real
  ``pull_request`` payload, and ``GITHUB_API_URL`` at the fake server.

A ``run:`` line that contains ``${{`` is refused: inputs must travel through ``env:``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from easeml_ci.github.workflow import parse_output_file

#: The repository and pull request the action's tests run against on the fake GitHub.
REPO = "acme/models"
PR = 7

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION_YML = REPO_ROOT / "action.yml"
VENV_BIN = str(Path(sys.executable).parent)
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_ANNOTATION = re.compile(r"^::(error|warning|notice)(?: ([^:]*))?::(.*)$")


# --- the expression resolver -------------------------------------------------------------------

def _tokens(expr: str) -> list[str]:
    out, i = [], 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif expr.startswith("||", i) or expr.startswith("&&", i):
            out.append(expr[i:i + 2])
            i += 2
        elif c == "'":
            j = i + 1
            buf = []
            while True:
                if j >= len(expr):
                    raise ValueError(f"unterminated string in {expr!r}")
                if expr[j] == "'":
                    if expr.startswith("''", j):
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(expr[j])
                j += 1
            out.append("'" + "".join(buf))
            i = j + 1
        else:
            m = re.match(r"[A-Za-z0-9_.\-]+", expr[i:])
            if not m:
                raise ValueError(f"unsupported expression {expr!r} at {expr[i:]!r}")
            out.append(m.group(0))
            i += len(m.group(0))
    return out


def _value(token: str, contexts: dict) -> Any:
    if token.startswith("'"):
        return token[1:]
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    if re.fullmatch(r"-?\d+(\.\d+)?", token):
        return float(token) if "." in token else int(token)
    node: Any = contexts
    for part in token.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def evaluate(expr: str, contexts: dict) -> Any:
    """Evaluate ``a.b || 'x' && c`` the way GitHub does (falsy: '', 0, null, false)."""
    toks = _tokens(expr)
    # operands separated by operators; && binds tighter than ||
    ors: list[list[Any]] = [[]]
    expect_operand = True
    for t in toks:
        if t in ("||", "&&"):
            if expect_operand:
                raise ValueError(f"bad expression {expr!r}")
            if t == "||":
                ors.append([])
            expect_operand = True
        else:
            if not expect_operand:
                raise ValueError(f"bad expression {expr!r}")
            ors[-1].append(_value(t, contexts))
            expect_operand = False
    if expect_operand:
        raise ValueError(f"bad expression {expr!r}")
    result: Any = None
    for conj in ors:
        value = conj[0]
        for nxt in conj[1:]:
            value = nxt if value else value
        result = value
        if value:
            return value
    return result


def _stringify(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def resolve(template: Any, contexts: dict) -> str:
    """Substitute every ``${{ expr }}`` in a string value."""
    if not isinstance(template, str):
        return _stringify(template)
    return _EXPR.sub(lambda m: _stringify(evaluate(m.group(1), contexts)), template)


# --- event payloads ------------------------------------------------------------------------------

def pull_request_event(repository: str, number: int, base_sha: str, head_sha: str, *,
                       fork: bool = False, base_ref: str = "main",
                       head_ref: str = "feature") -> dict:
    """A ``pull_request`` (opened) payload with the fields GitHub sends that the action reads."""
    owner, name = repository.split("/")
    head_repo = f"contributor/{name}" if fork else repository
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number, "state": "open", "title": "Improve the model",
            "html_url": f"https://github.com/{repository}/pull/{number}",
            "user": {"login": "contributor" if fork else "octocat", "type": "User"},
            "head": {"ref": head_ref, "sha": head_sha, "label": f"{head_repo.split('/')[0]}:{head_ref}",
                     "repo": {"full_name": head_repo, "fork": fork}},
            "base": {"ref": base_ref, "sha": base_sha, "label": f"{owner}:{base_ref}",
                     "repo": {"full_name": repository, "fork": False}},
        },
        "repository": {"full_name": repository, "name": name, "owner": {"login": owner},
                       "default_branch": "main"},
        "sender": {"login": "contributor" if fork else "octocat", "type": "User"},
    }


# --- running -------------------------------------------------------------------------------------

@dataclass
class Annotation:
    level: str
    props: dict
    message: str


@dataclass
class RunResult:
    exit_code: int
    outputs: dict
    summary: str
    stdout: str
    stderr: str
    steps: dict = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    @property
    def annotations(self) -> list[Annotation]:
        out = []
        for line in self.stdout.splitlines():
            m = _ANNOTATION.match(line)
            if m:
                props = {}
                for part in (m.group(2) or "").split(","):
                    if "=" in part:
                        k, v = part.split("=", 1)
                        props[k] = v.replace("%3A", ":").replace("%2C", ",").replace("%25", "%")
                out.append(Annotation(m.group(1), props,
                                      m.group(3).replace("%0A", "\n").replace("%0D", "\r")
                                      .replace("%25", "%")))
        return out

    @property
    def log(self) -> str:
        return self.stdout + self.stderr


class ActionHarness:
    """One runner job: a workspace, an event, a fake API, and the action to run."""

    def __init__(self, workspace: Path, *, api_url: str, token: str, repository: str,
                 event: dict, event_name: str = "pull_request", sha: str | None = None,
                 action_yml: Path = ACTION_YML, extra_env: dict | None = None,
                 bin_dir: str | None = None, ledger_key: str | None = None):
        """``ledger_key``: the ``ledger-key`` input a workflow passes from its secret when the
        run's inputs name none (default: the tests' EASEML_LEDGER_KEY; "" for none)."""
        self.ledger_key = (os.environ.get("EASEML_LEDGER_KEY", "") if ledger_key is None
                           else ledger_key)
        self.workspace = Path(workspace)
        self.api_url = api_url
        self.token = token
        self.repository = repository
        self.event = event
        self.event_name = event_name
        self.sha = sha or (event.get("pull_request") or {}).get("head", {}).get("sha") or "0" * 40
        self.action_yml = Path(action_yml)
        self.extra_env = dict(extra_env or {})
        self.bin_dir = bin_dir
        self.action = yaml.safe_load(self.action_yml.read_text())

    def run(self, inputs: dict[str, str], *, timeout: float = 120) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="runner-") as tmp:
            return self._run(inputs, Path(tmp), timeout)

    def _base_env(self, tmp: Path) -> dict[str, str]:
        event_path = tmp / "event.json"
        event_path.write_text(json.dumps(self.event))
        pr = self.event.get("pull_request") or {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp / "home"),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REPOSITORY_OWNER": self.repository.split("/")[0],
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": self.sha,
            "GITHUB_REF": f"refs/pull/{pr.get('number')}/merge" if pr else "refs/heads/main",
            # the workflow file that runs, at the ref its definition came from
            "GITHUB_WORKFLOW_REF": f"{self.repository}/.github/workflows/easeml-gate.yml@"
                                   + (f"refs/pull/{pr.get('number')}/merge" if pr else "refs/heads/main"),
            "GITHUB_BASE_REF": (pr.get("base") or {}).get("ref", ""),
            "GITHUB_HEAD_REF": (pr.get("head") or {}).get("ref", ""),
            "GITHUB_API_URL": self.api_url,
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_ACTION_PATH": str(self.action_yml.parent),
            "RUNNER_TEMP": str(tmp / "runner-temp"),
            "RUNNER_OS": "Linux",
            "EASEML_GITHUB_BACKOFF": "0.01",
        }
        if os.environ.get("PYTHONPATH"):  # the code under test (a worktree), not the installed one
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        (tmp / "home").mkdir(exist_ok=True)
        (tmp / "runner-temp").mkdir(exist_ok=True)
        env.update(self.extra_env)
        return env

    def _contexts(self, inputs: dict[str, str], env: dict) -> dict:
        github = {
            "token": self.token, "repository": self.repository, "event_name": self.event_name,
            "event": self.event, "sha": self.sha, "workspace": str(self.workspace),
            "action_path": str(self.action_yml.parent), "api_url": self.api_url,
            "server_url": "https://github.com", "run_id": "4242",
            "base_ref": env["GITHUB_BASE_REF"], "head_ref": env["GITHUB_HEAD_REF"],
        }
        ctx = {"github": github, "runner": {"temp": env["RUNNER_TEMP"], "os": "Linux"},
               "env": env, "steps": {}}
        declared = self.action.get("inputs") or {}
        if "ledger-key" in declared and "ledger-key" not in inputs and self.ledger_key:
            inputs = {**inputs, "ledger-key": self.ledger_key}  # the workflow's secret
        unknown = set(inputs) - set(declared)
        if unknown:
            raise ValueError(f"inputs not declared in action.yml: {sorted(unknown)}")
        resolved = {}
        for name, spec in declared.items():
            if name in inputs:
                resolved[name] = str(inputs[name])
            elif spec.get("required") and "default" not in spec:
                raise ValueError(f"required input {name!r} missing")
            else:
                resolved[name] = resolve(spec.get("default", ""), ctx)
        ctx["inputs"] = resolved
        return ctx

    def _run(self, inputs: dict[str, str], tmp: Path, timeout: float) -> RunResult:
        base = self._base_env(tmp)
        ctx = self._contexts(inputs, base)
        summary = tmp / "step_summary.md"
        summary.touch()
        runs = self.action["runs"]
        assert runs.get("using") == "composite", "the harness runs composite actions"
        stdout, stderr, commands = [], [], []
        exit_code = 0
        for index, step in enumerate(runs["steps"]):
            sid = step.get("id") or f"__{index}"
            outputs: dict[str, str] = {}
            if "uses" in step:
                if not str(step["uses"]).startswith("actions/setup-python@"):
                    raise NotImplementedError(f"harness cannot run uses: {step['uses']}")
                with_ = {k: resolve(v, ctx) for k, v in (step.get("with") or {}).items()}
                assert with_.get("update-environment") == "false", \
                    "setup-python must not touch the user's Python"
                outputs = {"python-path": sys.executable,
                           "python-version": ".".join(map(str, sys.version_info[:3]))}
            elif sid == "install":
                assert "pip install" in step["run"] and "$ACTION_PATH" in step["run"]
                outputs = {"bin": self.bin_dir or zygote_bin()}
            else:
                script = step["run"]
                if "${{" in script:
                    raise AssertionError(f"step {sid}: expression inside a run: line (use env:)")
                env = dict(base)
                for k, v in (step.get("env") or {}).items():
                    env[k] = resolve(v, ctx)
                out_file = tmp / f"output-{sid}"
                out_file.touch()
                env["GITHUB_OUTPUT"] = str(out_file)
                env["GITHUB_STEP_SUMMARY"] = str(summary)
                cwd = resolve(step.get("working-directory", str(self.workspace)), ctx)
                assert step.get("shell") == "bash", f"step {sid}: composite run steps need shell: bash"
                script_file = tmp / f"step-{sid}.sh"
                script_file.write_text(script)
                commands.append(script)
                done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                       str(script_file)], cwd=cwd, env=env, capture_output=True,
                                      text=True, timeout=timeout)
                stdout.append(done.stdout)
                stderr.append(done.stderr)
                outputs = parse_output_file(out_file.read_text())
                if done.returncode != 0:
                    exit_code = done.returncode
                    ctx["steps"][sid] = {"outputs": outputs, "outcome": "failure"}
                    break
            ctx["steps"][sid] = {"outputs": outputs, "outcome": "success"}
        action_outputs = {name: resolve(spec.get("value", ""), ctx)
                          for name, spec in (self.action.get("outputs") or {}).items()}
        return RunResult(exit_code=exit_code, outputs=action_outputs, summary=summary.read_text(),
                         stdout="".join(stdout), stderr="".join(stderr), steps=ctx["steps"],
                         commands=commands)


# --- a pre-imported interpreter for the gate step ------------------------------------------------
#
# Importing the product (scipy, onnxruntime) costs seconds per process on a busy
# machine; a test file that runs the action twenty times would spend a minute importing. The
# zygote imports it once and forks a child per command: each ``easeml-ci`` started by a step
# is still a process of its own (own environment, working directory, stdin/stdout/stderr, exit
# code, real concurrency), running the same ``easeml_ci.cli:main`` the console script runs.
# ``ActionHarness(..., bin_dir=VENV_BIN)`` runs the real console script instead.

_ZYGOTE_SRC = r'''
import json, os, signal, socket, sys
import easeml_ci.cli, easeml_ci.gate.check, easeml_ci.config, easeml_ci.models, easeml_ci.testsets
import easeml_ci.github.action, easeml_ci.ledger.github_backend, requests, numpy
path = sys.argv[1]
parent = os.getppid()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(64)
srv.settimeout(1.0)
def _reap(*_):  # children are reaped as they end (waited for, so their CPU time is counted)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
signal.signal(signal.SIGCHLD, _reap)
print("ready", flush=True)
while True:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        if os.getppid() != parent:  # the test process is gone: do not linger
            sys.exit(0)
        continue
    conn.settimeout(None)
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    if os.fork() == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as in a console script of its own
        srv.close()
        req = json.loads(msg)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        if req["env"].get("HARNESS_NOW"):  # a test moves the gate's clock (verdicts in rounds)
            import datetime, easeml_ci.gate.schedule as schedule
            at = datetime.datetime.fromisoformat(req["env"]["HARNESS_NOW"])
            schedule.now = lambda: at
        if req["env"].get("HARNESS_CLOCK_PAD") == "skip":
            # a test whose point is not the evaluation clock: the deadline still kills an overrun
            # (the clock's own time), only the rest of it is not waited out (test_hard_clock.py
            # and test_model_side_channels.py test the wait itself)
            import easeml_ci.models.clock as evaluation_clock
            evaluation_clock.EvaluationClock.pad = lambda self: None
            evaluation_clock.EvaluationClock.release = lambda self, margin=0.0: None
        sys.argv = req["argv"]
        code = 0
        try:
            easeml_ci.cli.main(args=req["argv"][1:], prog_name="easeml-ci")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(str(code).encode())
        os._exit(code)
    for fd in fds:
        os.close(fd)
    conn.close()
'''

_SHIM_SRC = r'''#!{python} -S
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({sock!r})
req = json.dumps({{"argv": ["easeml-ci"] + sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}})
socket.send_fds(s, [req.encode()], [0, 1, 2])
data = b""
while True:
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
if not data:
    sys.stderr.write("easeml-ci (zygote): the child died without an exit code\n")
    sys.exit(1)
sys.exit(int(data))
'''


class Zygote:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="easeml-zygote-"))
        sock = str(self.dir / "z.sock")
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE_SRC, sock],
                                     stdout=subprocess.PIPE, cwd=str(REPO_ROOT))
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the zygote did not start")
        self.bin_dir = self.dir / "bin"
        self.bin_dir.mkdir()
        shim = self.bin_dir / "easeml-ci"
        shim.write_text(_SHIM_SRC.format(python=sys.executable, sock=sock))
        shim.chmod(0o755)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_zygote: Zygote | None = None


def zygote_bin() -> str:
    """The directory of an ``easeml-ci`` that forks from a pre-imported interpreter."""
    global _zygote
    if _zygote is None:
        import atexit

        _zygote = Zygote()
        atexit.register(_zygote.close)
    return str(_zygote.bin_dir)
