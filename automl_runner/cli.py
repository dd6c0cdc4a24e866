"""The `easeml-automl` command line: submit tenants, watch the queue, run workers.

User mistakes surface as :class:`~easeml_ci.errors.EasemlError` (or click's own usage errors) and
become one line on stderr with exit code 2, never a traceback.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from easeml_ci.cli.group import ErrorMappingGroup

from .errors import AutomlError

STORE_ENV = "EASEML_AUTOML_STORE"


store_option = click.option(
    "--store", "store_url", envvar=STORE_ENV, required=True, metavar="URL",
    help=f"Queue database: a file path, sqlite:///PATH or postgresql://... (env {STORE_ENV}).",
)


#: What the queue's commands import beyond the gate's own dependencies: the `automl` extra.
AUTOML_MODULES = {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx", "threadpoolctl": "threadpoolctl"}
#: Commands that train, export or schedule (the others only read the store or encode rows).
NEEDS_AUTOML = {"submit", "work", "catalogue", "simulate"}


def require_automl_extra(command: str) -> None:
    """Exit 2 with the install line when the `automl` extra is missing (a gate-only install)."""
    import importlib.util

    def absent(mod: str) -> bool:
        try:
            return importlib.util.find_spec(mod) is None
        except (ImportError, ValueError):
            return True

    missing = [pkg for mod, pkg in AUTOML_MODULES.items() if absent(mod)]
    if missing:
        raise AutomlError(f"easeml-automl {command} needs the AutoML extra ({', '.join(missing)} not installed); "
                          "install it with: pip install 'easeml-ci[automl]'")


@click.group(cls=ErrorMappingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="easeml-ci")
@click.pass_context
def main(ctx: click.Context) -> None:
    """The multi-tenant AutoML queue (ease.ml): many tenants, one pool of devices."""
    if ctx.invoked_subcommand in NEEDS_AUTOML:
        require_automl_extra(ctx.invoked_subcommand)


# --------------------------------------------------------------------------------------------


@main.command()
@click.argument("dataset", metavar="DATASET")
@store_option
@click.option("--name", "tenant", required=True, help="Tenant name (letters, digits, '.', '_', '-').")
@click.option("--target", required=True, help="The column to predict.")
@click.option("--task", type=click.Choice(["classification", "regression"]), default=None,
              help="Correct the inferred task.")
@click.option("--categorical", multiple=True, metavar="COL", help="Treat COL as categorical (repeatable).")
@click.option("--numeric", multiple=True, metavar="COL", help="Treat COL as numeric (repeatable).")
@click.option("--ignore", multiple=True, metavar="COL", help="Leave COL out of the features (repeatable).")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="The tenant's folder: the promoted model, its card and the trials' models go there. "
                   "Resolved (links followed) and inside the tenants' root, else exit 2.")
@click.option("--root", default=None, metavar="DIR",
              help="The tenants' root that --output must lie inside (default: env EASEML_AUTOML_ROOT, "
                   "else the current directory).")
@click.option("--repository", default=None, metavar="OWNER/NAME",
              help="Open or update a pull request with each promoted model there.")
@click.option("--model-path", default=None, metavar="PATH",
              help="Path of the model in the repository (default models/<tenant>.onnx).")
@click.option("--exclude", multiple=True, metavar="CAND", help="Never train candidate CAND for this tenant.")
@click.option("--only", multiple=True, metavar="CAND", help="Train only these candidates (repeatable).")
@click.option("--margin", type=float, default=0.01, show_default=True,
              help="Promote only when the best score improves by at least this much.")
@click.option("--validation-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the validation split.")
@click.option("--replace", is_flag=True, help="Resubmit an existing tenant (its trials start over).")
@click.option("--dry-run", is_flag=True, help="Show the inferred schema, register nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def submit(dataset, store_url, tenant, target, task, categorical, numeric, ignore, output, root, repository,
           model_path, exclude, only, margin, validation_fraction, seed, replace, dry_run, as_json):
    """Register a tenant's DATASET (CSV or .npz with a target column) and queue its candidates."""
    from .candidates.catalogue import load_catalogue
    from .datasets.schema import infer_schema
    from .store import open_store

    if exclude and only:
        overlap = sorted(set(exclude) & set(only))
        if overlap:
            raise click.BadParameter(f"candidate {overlap[0]!r} is both excluded and in --only", param_hint="--exclude")
    from .folders import check_output

    folder = check_output(output, root) if output else None  # before anything is read or created
    schema = infer_schema(dataset, target, task=task, categorical=categorical, numeric=numeric, ignore=ignore,
                          validation_fraction=validation_fraction, seed=seed)
    catalogue = load_catalogue()
    accepted = [c.name for c in catalogue if c.accepts(schema)]
    if not as_json:
        click.echo(schema.describe())
    queued: list[str] = []
    if not dry_run:
        from .store import store_exists

        new_store = not store_exists(store_url)
        with open_store(store_url) as store:
            if new_store:  # creating a store is submit's explicit act: say so (a typo shows here)
                click.echo(f"created a new store at {store_url}", err=True)
            queued = store.add_tenant(
                tenant, dataset, schema, catalogue, output=folder,
                repository=repository, model_path=model_path, excluded=exclude, only=only or None, margin=margin,
                replace=replace,
            )
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "registered": not dry_run, "schema": schema.to_dict(),
                               "accepted": accepted, "queued": queued}, sort_keys=True))
    elif dry_run:
        click.echo(f"dry run: {len(accepted)} candidates accept this schema; nothing registered")
    else:
        click.echo(f"tenant {tenant}: queued {len(queued)} candidates ({', '.join(queued)})")


# --------------------------------------------------------------------------------------------


def _fmt_score(x):
    return "-" if x is None else f"{x:.4f}"


@main.command()
@store_option
@click.option("--tenant", default=None, help="Only this tenant, with its running trials and queue.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def status(store_url, tenant, as_json):
    """Per tenant: best model, validation score, trials done and running, the queue."""
    from .store import open_store

    with open_store(store_url, must_exist=True) as store:
        rows = store.status()
        if tenant is not None:
            store.tenant(tenant)  # clear error for an unknown name
            rows = [r for r in rows if r.name == tenant]
    if as_json:
        click.echo(json.dumps({"tenants": [r.to_dict() for r in rows]}, sort_keys=True))
        return
    if not rows:
        click.echo("no tenants yet; add one with `easeml-automl submit`")
        return
    head = f"{'tenant':<20} {'task':<14} {'best candidate':<28} {'score':>7} {'done':>5} {'run':>4} {'queue':>5} {'fail':>4}  promoted"
    click.echo(head)
    for r in rows:
        promoted = "-"
        if r.promoted_candidate:
            promoted = f"{r.promoted_candidate} {_fmt_score(r.promoted_score)} [{r.promotion_status}]"
            if r.pull_request:
                promoted += f" {r.pull_request}"
        click.echo(f"{r.name:<20} {r.task:<14} {(r.best_candidate or '-'):<28} {_fmt_score(r.best_score):>7} "
                   f"{r.done:>5} {r.running:>4} {r.queued:>5} {r.failed:>4}  {promoted}")
        if r.paused:
            click.echo(f"  PAUSED: {r.paused}; submit it again with --replace to resume")
        if r.ran_on and (tenant is not None or set(r.ran_on) != {"cpu"}):
            click.echo("  ran on:  " + ", ".join(f"{dev} {n}" for dev, n in sorted(r.ran_on.items())))
        if r.stopped_early:
            click.echo(f"  stopped early: {len(r.stopped_early)} at a rung, {len(r.retried)} since trained "
                       "to the full budget")
        if tenant is not None:
            click.echo(f"  running: {', '.join(r.running_candidates) or '-'}")
            click.echo(f"  queue:   {', '.join(r.queue) or '-'}")
            for cand, at in r.stopped_early.items():
                now = ("trained again to the full budget" if cand in r.retried else
                       "training again to the full budget" if cand in r.running_candidates else
                       "queued again for the full budget" if cand in r.queue else
                       "runs again once the tenant has nothing else queued")
                click.echo(f"  stopped: {cand} at {at:.0%} of its budget; {now}")


# --------------------------------------------------------------------------------------------


@main.command()
@store_option
@click.option("--device", default="cpu", show_default=True,
              help="cpu or cuda:N; cuda:N must exist here (checked with PyTorch or XGBoost, the 'gpu' extra).")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="Threads this worker trains with (BLAS, PyTorch, XGBoost, onnxruntime): run one worker "
                   "per core. 0: no cap (every library uses all cores).")
@click.option("--once", is_flag=True, help="Run one trial, then exit.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None, help="Exit after K trials.")
@click.option("--exit-when-idle", is_flag=True, help="Exit when nothing is queued or running.")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds a trial stays ours without a heartbeat.")
@click.option("--poll", "poll_seconds", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds to wait when the queue is empty.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fail a trial whose lease expired this many times.")
@click.option("--scheduler", type=click.Choice(["multitenant", "multitenant-hb", "round-robin", "random"]),
              default="multitenant", show_default=True,
              help="multitenant-hb: multitenant that also stops iterative trials early at rungs "
                   "(docs/scheduler.md); stopped trials run again to the full budget once their tenant "
                   "has nothing else queued.")
@click.option("--curves", "curves_path", default="builtin", show_default=True, metavar="FILE|builtin|none",
              help="multitenant-hb's learning curves of other tenants (tenant,candidate,fidelity,quality,cost"
                   "[,resumes]): 'builtin' (automl_runner/data/real_curves.csv) or 'none'.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prior", "prior_path", default="builtin", show_default=True, metavar="FILE|builtin|none",
              help="Scheduler prior: a CSV tenant,candidate,quality,cost of other tenants' results, "
                   "'builtin' (the catalogue measured on 71 datasets), or 'none' (learn from the queue's "
                   "own tenants only; measured slower than round-robin at small regret, docs/scheduler.md).")
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Trial models go to DIR/<tenant>/ (default: <tenant output>/trials, else ~/.cache/easeml-automl).")
@click.option("--worker-id", default=None, help="Name in the store (default host:pid).")
@click.option("--no-promote", is_flag=True, help="Record results but never promote.")
@click.option("--root", envvar="EASEML_AUTOML_ROOT", default=None, metavar="DIR",
              help="Write tenants' files only inside DIR (env EASEML_AUTOML_ROOT): a tenant folder the store "
                   "records outside it is refused. Default: every tenant's own recorded folder.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per trial on stdout; no progress.")
def work(store_url, device, threads, once, max_trials, exit_when_idle, lease_seconds, poll_seconds, max_attempts,
         scheduler, curves_path, seed, prior_path, artifacts, worker_id, no_promote, root, as_json):
    """Take trials from the queue and train them on DEVICE until stopped.

    SIGTERM/SIGINT abort the trial in training, release it to the queue, and exit 0.
    """
    import re

    from .worker.worker import Progress, Worker, WorkerOptions

    if not re.match(r"^(cpu|cuda:\d+)$", device):
        raise click.BadParameter(f"must be cpu or cuda:N (N a GPU index), got {device!r}", param_hint="--device")
    from .worker.devices import check_device

    check_device(device)  # no such GPU here: exit 2 before any trial is recorded on it
    prior = None
    if prior_path != "none":
        from .errors import MatrixError
        from .scheduling.matrices import bundled, load_matrix

        try:
            prior = (bundled("real") if prior_path == "builtin" else load_matrix(prior_path)).rows
        except MatrixError as exc:
            raise click.BadParameter(str(exc), param_hint="--prior")
    curves = None
    if scheduler == "multitenant-hb" and curves_path != "none":
        from .errors import MatrixError
        from .scheduling.matrices import DATA_DIR, load_curves

        try:
            curves = load_curves(DATA_DIR / "real_curves.csv" if curves_path == "builtin" else curves_path)
        except MatrixError as exc:
            raise click.BadParameter(str(exc), param_hint="--curves")
    opts = WorkerOptions(device=device, lease_seconds=lease_seconds, max_attempts=max_attempts,
                         poll_seconds=poll_seconds, once=once, max_trials=max_trials, exit_when_idle=exit_when_idle,
                         artifacts=artifacts, worker_id=worker_id, scheduler=scheduler, seed=seed, prior=prior,
                         promote=not no_promote, threads=threads or None, curves=curves, root=root)

    def emit(result):
        if as_json:
            click.echo(json.dumps(result.to_dict(), sort_keys=True))
            sys.stdout.flush()

    from .store import open_store

    # a typo (`--store queu.db`) must not create an empty queue that the worker then waits on
    open_store(store_url, create=False, must_exist=True).close()
    worker = Worker(store_url, opts, progress=Progress(not as_json), on_result=emit)
    worker.install_signal_handlers()
    prior_note = "no prior" if prior is None else (
        f"prior {'builtin' if prior_path == 'builtin' else prior_path}: {len({r[0] for r in prior})} tenants")
    if curves is not None:
        prior_note += f", learning curves {curves_path}: {len(curves.tenants)} tenants"
    cap = "threads uncapped" if not threads else f"{threads} thread{'s' if threads > 1 else ''}"
    worker.progress.line(f"[{worker.id}] worker on {device} ({cap}), store {worker.store.kind}, "
                         f"scheduler {scheduler} ({prior_note})")
    results = worker.run()
    done = sum(r.status == "done" for r in results)
    worker.progress.line(f"[{worker.id}] stopped after {len(results)} trial(s), {done} done")
    worker.store.close()


# --------------------------------------------------------------------------------------------


@main.command()
@click.option("--store", "store_url", envvar=STORE_ENV, default=None, metavar="URL",
              help="Also register new candidates there and queue them for matching tenants.")
@click.option("--json", "as_json", is_flag=True)
def catalogue(store_url, as_json):
    """List the candidate models (built-in and registered by entry point)."""
    from .candidates.catalogue import load_catalogue
    from .store import open_store

    cands = load_catalogue()
    queued: dict[str, list[str]] = {}
    if store_url:
        with open_store(store_url, must_exist=True) as store:  # a typo must not create a store
            queued = store.sync_catalogue(cands)
    if as_json:
        click.echo(json.dumps({"candidates": [c.spec() for c in cands], "queued": queued}, sort_keys=True))
        return
    for c in cands:
        hp = ", ".join(f"{k}={v}" for k, v in c.hyperparameters.items())
        gpu = " [gpu]" if c.uses_gpu else " [gpu when the worker has one]" if c.takes_gpu else ""
        click.echo(f"{c.name:<30} {c.family:<12} {'/'.join(t[:5] for t in c.tasks):<6} {hp}{gpu}")
    for name, tenants in queued.items():
        click.echo(f"queued {name} for {', '.join(tenants)}")


@main.command("testset")
@click.argument("raw", metavar="RAW")
@click.argument("out", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--card", "card_path", required=True, metavar="CARD",
              help="The promoted model's model-card.json (or <model>.card.json from its pull request).")
@click.option("--pool", is_flag=True,
              help="RAW has no labels: write the unlabelled pool of the gate's label request (.npz or .csv).")
@click.option("--key-env", default="EASEML_TESTSET_KEY", show_default=True,
              help="Environment variable that holds the key when OUT ends in .enc (never pass a key as an argument).")
@click.option("--label-column", default="label", show_default=True,
              help="Name of the label column when OUT is a CSV (the gate's label_column).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (and nothing on stderr).")
def testset(raw, out, card_path, pool, key_env, label_column, force, as_json):
    """Encode held-out rows RAW for the promoted model of CARD into the gate's test set OUT.

    RAW is in the tenant's own format (CSV or .npz with the dataset's columns: text categories,
    empty cells allowed) and is encoded exactly as the training rows were. OUT: .npz or .csv
    (plaintext), or .enc (encrypted with the key in --key-env). Prints the test set's
    fingerprint, which keys the gate's budget ledger.
    """
    from .datasets.testset_export import encode_rows, out_kind, summary, write

    kind = out_kind(out, pool)
    if out.exists() and not force:
        raise AutomlError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise AutomlError(f"OUT {out} is a directory; give a file name ending in .npz, .csv or .enc")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise AutomlError(f"cannot write {out}: directory {parent} does not exist")
    if os.path.exists(raw) and os.path.exists(out) and os.path.samefile(raw, out):
        raise AutomlError(f"OUT {out} is the same file as RAW; write the test set elsewhere")
    key = None
    if kind == "encrypted":
        from easeml_ci.testsets.crypto import key_from_env

        key = key_from_env(key_env, purpose=f"the key to encrypt {out} with")
    enc = encode_rows(card_path, raw, pool=pool)
    fingerprint = write(enc, out, kind, key=key, label_column=label_column)
    if as_json:
        n, k = enc.X.shape
        click.echo(json.dumps({
            "out": str(out), "kind": "pool" if pool else kind, "rows": n, "columns": k,
            "features": [f.name for f in enc.schema.features], "label": None if pool else enc.schema.target,
            "fingerprint": fingerprint, "unseen_cells": enc.unseen_cells, "unseen": enc.unseen,
            "missing": enc.missing, "unknown_labels": enc.unknown_labels, "notes": enc.notes,
        }, sort_keys=True))
        return
    for note in enc.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(summary(enc, raw, str(out), kind), err=True)
    if fingerprint is not None:
        click.echo(fingerprint)


@main.command("retry-failed")
@store_option
@click.option("--tenant", default=None)
def retry_failed(store_url, tenant):
    """Queue failed trials again."""
    from .store import open_store

    with open_store(store_url, must_exist=True) as store:
        if tenant:
            store.tenant(tenant)
        n = store.retry_failed(tenant)
    click.echo(f"queued {n} failed trial(s) again")


@main.command()
@store_option
@click.option("--config", "config_path", default=None, metavar="PATH",
              help="Also show the test sets of this gate config's ledgers (e.g. .easeml.yml).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8080, show_default=True)
@click.option("--token", envvar="EASEML_DASHBOARD_TOKEN", default=None, metavar="TOKEN",
              help="Require this token on every request (env EASEML_DASHBOARD_TOKEN).")
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests served at once.")
@click.option("--private-sink-key-env", "sink_key_env", default=None, metavar="NAME",
              help="The owner's view: NAME is the environment variable holding the test-set key; with it, and "
                   "a --config whose private_sink is a file, a test set's page shows its pending label requests.")
def dashboard(store_url, config_path, host, port, token, threads, sink_key_env):
    """Serve the read-only dashboard: tenants, trials, workers, test sets, and its JSON API."""
    try:
        import flask  # noqa: F401
        import waitress
    except ImportError:
        raise AutomlError("easeml-automl dashboard needs the dashboard extra; "
                          "install it with: pip install 'easeml-ci[dashboard]'") from None
    from .dashboard import create_app, is_loopback

    if token is not None and len(token) < 16:
        raise AutomlError(f"--token must be at least 16 characters, got {len(token)}")
    if not is_loopback(host) and token is None:
        raise AutomlError(f"--host {host} is not a loopback address: anyone who can reach it would see every "
                          "tenant; give --token (or EASEML_DASHBOARD_TOKEN), or keep --host 127.0.0.1")
    from easeml_ci.errors import EasemlError

    try:
        app = create_app(store_url, config_path=config_path, token=token, sink_key_env=sink_key_env)
    except AutomlError:
        raise
    except EasemlError as exc:  # the config or the owner's key: exit 2, the message names it
        raise AutomlError(str(exc)) from None
    click.echo(f"dashboard on http://{host}:{port}/ (read-only; Ctrl-C stops it)", err=True)
    waitress.serve(app, host=host, port=port, threads=threads, ident="easeml-dashboard", _quiet=True)


__all__ = ["main", "AutomlError"]

# --- the scheduler benchmark (H5's module) ---------------------------------------------------
from .scheduling.simulate import simulate_command  # noqa: E402

main.add_command(simulate_command, "simulate")


if __name__ == "__main__":  # python -m automl_runner.cli
    main()


@main.command("pick")
@click.argument("tenant")
@store_option
@click.option("--testset", required=True,
              help="Fresh data for the pick (features and row ids; labels on demand), as for `easeml-ci pick`.")
@click.option("--top", type=click.IntRange(min=2), default=5, show_default=True,
              help="Pick among the tenant's K best done trials (by validation score).")
@click.option("--config", "config_path", default=".easeml.yml", show_default=True,
              help="The .easeml.yml with the `pick:` section (reliability, tolerance, ...).")
@click.option("--labels", "label_store", default=None, help="Label store of the test set.")
@click.option("--key-env", default="EASEML_TESTSET_KEY", show_default=True)
@click.option("--promote", is_flag=True,
              help="Promote a certified pick as `work` promotes a tenant's best (card, output, pull request).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def pick(tenant, store_url, testset, top, config_path, label_store, key_env, promote, as_json):
    """Certify which of a tenant's best trials is best on fresh data, and optionally promote it."""
    from easeml_ci.cli.render import render_pick
    from easeml_ci.gate.pick import run_pick

    from .store import open_store

    with open_store(store_url, must_exist=True) as store:
        owner = store.tenant(tenant)
        trials = sorted((t for t in store.trials(tenant) if t.status == "done" and t.onnx_path),
                        key=lambda t: (-t.score, t.id))[:top]
        if len(trials) < 2:
            raise AutomlError(f"tenant {tenant} has {len(trials)} done trial(s) with a model; a pick "
                              "compares at least 2 (let `easeml-automl work` train more)")
        progress = None if as_json else (lambda m: click.echo(f"... {m}", err=True))
        result = run_pick(config_path, [t.onnx_path for t in trials], testset, key_env=key_env,
                          workdir=Path("."), progress=progress, label_store=label_store)
        chosen = trials[result.candidates.index(result.answer)] if result.picked else None
        promotion = None
        if promote and chosen is not None:
            promotion = _promote_pick(store, owner, chosen, progress)
    out = {"pick": result.to_dict(), "trials": [t.id for t in trials],
           "picked_trial": chosen.id if chosen else None,
           "promotion": None if promotion is None else promotion.status}
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
    else:
        click.echo(render_pick(result))
        if chosen is not None:
            click.echo(f"picked trial {chosen.id} ({chosen.candidate}, validation {chosen.score:.4f})"
                       + (f"; promotion: {promotion.status}" if promotion else
                          ("; not promoted (already the promoted model)" if promote else "")))
        elif promote:
            click.echo("nothing promoted: no certified pick yet")


def _promote_pick(store, tenant, trial, progress):
    """The pick's model through the queue's own promotion (card, output folder, pull request)."""
    from .candidates.catalogue import by_name, load_catalogue
    from .worker.promote import maybe_promote

    cand = by_name(load_catalogue())[trial.candidate]
    blob = Path(trial.onnx_path).read_bytes()
    return maybe_promote(store, tenant, trial.id, cand, blob, trial.score, picked=True,
                         fidelity=trial.fidelity, progress=None, root=os.environ.get("EASEML_AUTOML_ROOT") or None)
