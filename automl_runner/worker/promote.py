"""Promotion: hand a tenant's new best model to the gate.

When a finished trial is the tenant's best and beats the last promoted score by at least the
tenant's margin (the store decides that atomically, see :meth:`Store.begin_promotion`), the worker
that finished it

1. writes ``model.onnx``, ``model-card.json`` and ``MODEL_CARD.md`` into the tenant's output
   directory (atomically: temporary file, then rename);
2. when the tenant has a GitHub repository, opens or updates ONE pull request there: branch
   ``easeml-automl/<tenant>`` (created from the default branch the first time), the model and its
   card written with the contents API, then the open PR from that branch is updated, or created.
   The gate then judges the model on the secret test set.

The token comes from ``EASEML_GITHUB_TOKEN`` or ``GITHUB_TOKEN``; the API root from
``GITHUB_API_URL`` (GitHub Enterprise), default https://api.github.com. A failed pull request does
not undo the local files; the promotion is recorded as ``pr-failed`` with the reason, shown by
``easeml-automl status``, and the next promotion updates the same branch and PR.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..candidates.catalogue import Candidate
from ..errors import PromotionError
from ..folders import FolderError, TenantFolder
from ..store import Promotion, Store, Tenant

BRANCH_PREFIX = "easeml-automl/"


#: Characters shown as an escape (``\\u202e``) instead of themselves: controls (line breaks,
#: escape sequences), format characters (bidirectional overrides, zero-width joiners) and line or
#: paragraph separators, which could reorder, hide or split what the reader sees.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def md_code(text) -> str:
    """``text`` from a tenant's data as one markdown code span it cannot leave: THE escaping
    function for everything a tenant's data puts into the model card, the pull request's title and
    body (column names, categories, target, dataset name, tenant name).

    Inside a code span GitHub renders no link, autolink, mention, issue reference, closing
    keyword, emphasis or HTML, so ``Fixes #1`` in a column name closes nothing on merge and
    ``<img>`` is text. The fence is one backtick longer than the longest run of backticks inside
    (CommonMark closes a span only with a run of the same length); a space pads text that starts
    or ends with a backtick or a space (CommonMark strips one from each side); ``|`` is escaped so
    the span cannot split a table cell; controls, line breaks and invisible format characters are
    shown as escapes (``\\n``, ``\\u202e``), so a name can neither end the line nor reorder
    what is shown. Empty text is a span of one space.
    """
    s = _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    s = s.replace("|", "\\|")
    if not s:
        return "` `"
    run = max((len(r) for r in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    # (text of spaces only is shown as it is: CommonMark strips nothing from it)
    pad = " " if s.strip(" ") and (s[:1] in ("`", " ") or s[-1:] in ("`", " ")) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


#: See :attr:`ModelCard.card_format`.
CARD_FORMAT = 2


class Superseded(PromotionError):
    """A newer promotion of the same tenant got there first; this one has nothing to do."""


@dataclass(frozen=True)
class ModelCard:
    tenant: str
    candidate: str
    family: str
    hyperparameters: dict
    task: str
    metric: str
    validation_score: float
    previous_score: float | None
    validation_rows: int
    train_rows: int
    dataset: str
    data_fingerprint: str
    target: str
    classes: list
    features: list
    trial_id: int
    promotion_id: int
    onnx_sha256: str
    promoted_at: str
    #: How the model's class labels come out (``int``, ``str``; ``float`` for regression) and the
    #: rest of the schema: with them the card rebuilds the tenant's schema exactly, so
    #: ``easeml-automl testset`` encodes held-out rows the way the training rows were encoded.
    #: Cards written before these fields existed lack them; see ``testset_export.schema_from_card``.
    label_kind: str = "str"
    ignored: list = field(default_factory=list)
    validation_fraction: float = 0.2
    seed: int = 0
    #: Share of the candidate's full training budget (rounds, trees, epochs) the model was trained
    #: to: below 1 when ``multitenant-hb`` stopped the trial at a rung and its model was still the
    #: tenant's best. Written only then, so a full-budget card is the same as before the field.
    fidelity: float = 1.0
    #: The card's format. 2: every text from the tenant's data in ``MODEL_CARD.md`` (and the pull
    #: request) is a code span (:func:`md_code`), categories and the tenant's name included.
    #: Cards without the key are format 1 (categories shown as plain text); both load the same.
    card_format: int = CARD_FORMAT

    def to_json(self) -> str:
        fields = dict(self.__dict__)
        if not fields["fidelity"] < 1.0:
            del fields["fidelity"]
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"

    def to_markdown(self) -> str:
        prev = "none (first promotion)" if self.previous_score is None else f"{self.previous_score:.4f}"
        hp = ", ".join(md_code(f"{k}={v}") for k, v in sorted(self.hyperparameters.items())) or "defaults"
        feats = "\n".join(
            f"| {md_code(f['name'])} | {f['kind']} | "
            + (", ".join(map(md_code, f.get("categories", [])[:8])) + (", ..." if len(f.get("categories", [])) > 8 else "")
               + " (input value = index in this list, -1 if unseen)" if f["kind"] == "categorical" else "")
            + " |"
            for f in self.features
        )
        return (
            f"# Model card: {md_code(self.tenant)}\n\n"
            f"| | |\n|---|---|\n"
            f"| candidate | {md_code(self.candidate)} ({self.family}) |\n"
            f"| hyperparameters | {hp} |\n"
            f"| task | {self.task}" + (f", {len(self.classes)} classes" if self.classes else "") + " |\n"
            f"| validation {self.metric} | **{self.validation_score:.4f}** on {self.validation_rows} rows "
            f"(previous promoted: {prev}) |\n"
            f"| training rows | {self.train_rows} |\n"
            + (f"| training budget | {self.fidelity:.0%} of the candidate's budget: stopped early at a rung, and "
               "still the tenant's best; the full-budget run comes later and is promoted if it does better |\n"
               if self.fidelity < 1.0 else "")
            + f"| data | {md_code(self.dataset)}, sha256 {md_code(self.data_fingerprint)} |\n"
            f"| target | {md_code(self.target)} |\n"
            f"| ONNX | input `X` float32 [n, {len(self.features)}], sha256 `{self.onnx_sha256}` |\n"
            f"| promoted | {self.promoted_at} (trial {self.trial_id}) |\n\n"
            "The validation score is the AutoML runner's own estimate; the gate decides on the secret test set.\n\n"
            "To judge this model in the gate, encode held-out rows in the dataset's own format with "
            "`easeml-automl testset --card model-card.json holdout.csv testset.enc` (the card is this file's "
            "JSON twin: `model-card.json`, or `<model>.card.json` in the pull request; see docs/automl.md).\n\n"
            "## Input columns, in order\n\n| column | type | encoding |\n|---|---|---|\n" + feats + "\n"
        )


def build_card(tenant: Tenant, promo: Promotion, cand: Candidate, blob: bytes, fidelity: float | None = None) -> ModelCard:
    """The card of ``promo``'s model; ``fidelity``: the share of the budget it trained to (None: all)."""
    import hashlib

    s = tenant.schema
    return ModelCard(
        tenant=tenant.name, candidate=cand.name, family=cand.family,
        hyperparameters=cand.spec()["hyperparameters"], task=s.task,
        metric="accuracy" if s.task == "classification" else "r2",
        validation_score=promo.score, previous_score=promo.previous_score,
        validation_rows=s.n_validation, train_rows=s.n_train, dataset=s.source, data_fingerprint=s.fingerprint,
        target=s.target, classes=list(s.classes), features=s.to_dict()["features"], trial_id=promo.trial_id,
        promotion_id=promo.id,
        onnx_sha256=hashlib.sha256(blob).hexdigest(),
        promoted_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        label_kind=s.label_kind, ignored=list(s.ignored), validation_fraction=s.validation_fraction, seed=s.seed,
        fidelity=1.0 if fidelity is None else float(fidelity),
    )


def _card_promotion_id(text: str | bytes | None) -> int:
    try:
        return int(json.loads(text).get("promotion_id", -1)) if text else -1
    except (ValueError, AttributeError, TypeError):
        return -1


def write_local(output: str, card: ModelCard, blob: bytes, *, root: str | None = None) -> tuple[str, str] | None:
    """Write the model and its card unless a newer promotion already did; None when superseded.

    Two workers may promote one after the other and write in the opposite order; the card on
    disk carries its promotion id, and under a lock on the output directory the older
    promotion never overwrites the newer one. Everything is written inside the tenant's folder
    and never through a symbolic link (:class:`~automl_runner.folders.TenantFolder`; ``root``: the
    worker's tenants' root, refused when the folder lies outside it).
    """
    with TenantFolder(output, root=root) as folder, folder.locked():
        if _card_promotion_id(folder.read("model-card.json")) > card.promotion_id:
            return None
        model = folder.write("model.onnx", blob)
        folder.write("MODEL_CARD.md", card.to_markdown().encode())
        card_json = folder.write("model-card.json", card.to_json().encode())  # last: it marks the set complete
    return model, card_json


# --------------------------------------------------------------------------------------------
# GitHub


def github_token() -> str | None:
    return os.environ.get("EASEML_GITHUB_TOKEN") or os.environ.get("GITHUB_TOKEN") or None


def open_or_update_pr(repository: str, tenant: str, model_path: str, card: ModelCard, blob: bytes,
                      *, token: str | None = None, api_url: str | None = None, client: Any = None,
                      pin: Callable[[int], int] | None = None) -> str:
    """Write the model and its card on the tenant's branch and open or update its one PR.

    Only into ``repository``, the one the tenant registered: GitHub must answer for it under that
    very name (a renamed or transferred repository answers under its new name through a redirect:
    refused), and ``pin`` (the store's :meth:`Store.pin_repository`) is given GitHub's id of the
    repository and returns the id pinned at the tenant's first pull request; another id (the
    repository deleted and a namesake created) is refused before anything is written. A
    ``model_path`` whose folder on the branch is a symbolic link or a file is refused too.

    Returns the pull request's html URL. Raises :class:`PromotionError` with GitHub's reason.
    """
    from easeml_ci.github.api import (
        GitHubClient,
        GitHubConflict,
        GitHubError,
        GitHubNotFound,
        GitHubValidation,
        repo_path,
        write_once,
    )

    token = token if token is not None else github_token()
    if not token:
        raise PromotionError(
            f"repository {repository} is configured but no token is set (EASEML_GITHUB_TOKEN or GITHUB_TOKEN)"
        )
    gh = client or GitHubClient(token, api_url)  # the product's one HTTP policy
    branch = BRANCH_PREFIX + tenant
    owner = repository.split("/", 1)[0]
    stem = model_path[:-5] if model_path.endswith(".onnx") else model_path
    files = [
        (model_path, blob),
        (stem + ".card.md", card.to_markdown().encode()),
        (stem + ".card.json", card.to_json().encode()),
    ]
    title = f"easeml-automl: {md_code(tenant)} model {md_code(card.candidate)} ({card.metric} {card.validation_score:.4f})"
    body = (
        f"The AutoML queue found a better model for {md_code(tenant)}.\n\n" + card.to_markdown().split("\n", 2)[2]
        + f"\nFiles: {md_code(model_path)}, {md_code(stem + '.card.json')}, {md_code(stem + '.card.md')}.\n\n"
        "This pull request is updated in place when a better model is found.\n"
    )
    try:
        repo = gh.get(repo_path(repository))
        check_repository(repository, repo, pin)
        base = repo.get("default_branch") or "main"

        def branch_ref():
            try:
                return gh.get(repo_path(repository, "git", "ref", "heads", branch))
            except GitHubNotFound:
                return None

        if branch_ref() is None:
            base_ref = gh.get(repo_path(repository, "git", "ref", "heads", base))
            # a POST is not resent blindly: after an ambiguous failure, look for the branch first
            write_once(gh, lambda: gh.post(repo_path(repository, "git", "refs"),
                                           {"ref": f"refs/heads/{branch}", "sha": base_ref["object"]["sha"]}),
                       branch_ref)
        card_path = stem + ".card.json"

        def read(path):
            try:
                got = gh.request("GET", repo_path(repository, "contents", path), params={"ref": branch}).json()
            except GitHubNotFound:
                return None, None
            if not isinstance(got, dict):
                return None, None
            content = got.get("content")
            return got.get("sha"), (base64.b64decode(content) if content else None)

        for folder in _folders_of(model_path):  # a link committed there would lead the files elsewhere
            try:
                got = gh.request("GET", repo_path(repository, "contents", folder), params={"ref": branch}).json()
            except GitHubNotFound:
                break  # a missing folder: the contents API creates it, and the ones below it
            if not isinstance(got, list):
                kind = got.get("type", "file") if isinstance(got, dict) else type(got).__name__
                raise PromotionError(f"pull request to {repository} refused: {folder} on {branch} is a {kind}, "
                                     f"not a folder, so --model-path {model_path} cannot be written there")
        # The card goes last and carries the promotion id: an older promotion that reaches
        # GitHub after a newer one stops instead of overwriting it (checked before every file).
        # Every write is a compare-and-swap on the file's blob sha, so a concurrent writer
        # between our read and our write makes us check again.
        for attempt in range(5):
            try:
                for path, data in files:
                    _, current = read(card_path)
                    if _card_promotion_id(current) > card.promotion_id:
                        raise Superseded(f"a newer promotion is already on {branch}")
                    sha, _ = read(path)
                    put: dict[str, Any] = {
                        "message": f"easeml-automl: {tenant} -> {card.candidate} ({card.metric} {card.validation_score:.4f})",
                        "content": base64.b64encode(data).decode(),
                        "branch": branch,
                    }
                    if sha:
                        put["sha"] = sha
                    gh.put(repo_path(repository, "contents", path), put)
                break
            except (GitHubConflict, GitHubValidation):
                if attempt == 4:
                    raise

        def open_pr():
            prs = gh.request("GET", repo_path(repository, "pulls"),
                             params={"head": f"{owner}:{branch}", "state": "open"}).json()
            return prs[0] if prs else None

        def same(pr):
            return pr if pr and pr.get("title") == title and pr.get("body") == body else None

        existing = open_pr()
        if existing:
            pr = write_once(gh, lambda: gh.patch(repo_path(repository, "pulls", existing["number"]),
                                                 {"title": title, "body": body}),
                            lambda: same(open_pr()))
        else:
            pr = write_once(gh, lambda: gh.post(repo_path(repository, "pulls"),
                                                {"title": title, "head": branch, "base": base, "body": body}),
                            open_pr)
    except GitHubError as exc:
        raise PromotionError(f"pull request to {repository} failed: {exc}") from exc
    return pr.get("html_url") or pr.get("url") or f"#{pr.get('number')}"


def _folders_of(model_path: str) -> list[str]:
    parts = model_path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def check_repository(repository: str, repo: Any, pin: Callable[[int], int] | None) -> None:
    """Refuse (:class:`PromotionError`) a repository that is not the one the tenant registered:
    GitHub's ``full_name`` differs (a redirect after a rename or transfer) or its ``id`` differs
    from the pinned one."""
    if not isinstance(repo, dict):
        raise PromotionError(f"pull request to {repository} refused: GitHub's answer for the repository is not an object")
    name = repo.get("full_name")
    if not isinstance(name, str) or name.lower() != repository.lower():
        raise PromotionError(
            f"pull request to {repository} refused: GitHub answers for it as {name!r} (renamed or transferred); "
            "promotions go only to the repository the tenant registered, so submit the tenant again under "
            "a new name to send its models there")
    repo_id = repo.get("id")
    if pin is None:
        return
    if not isinstance(repo_id, int) or isinstance(repo_id, bool):
        raise PromotionError(f"pull request to {repository} refused: GitHub's answer has no repository id to pin")
    pinned = pin(repo_id)
    if pinned != repo_id:
        raise PromotionError(
            f"pull request to {repository} refused: it is GitHub repository id {repo_id}, but the tenant's "
            f"pull requests went to id {pinned} (deleted and created again by someone?); promotions go only "
            "to the repository the tenant registered")


def maybe_promote(store: Store, tenant: Tenant, trial_id: int, cand: Candidate, blob: bytes, score: float,
                  *, progress=None, who: str = "", fidelity: float | None = None,
                  picked: bool = False, root: str | None = None) -> Promotion | None:
    """Promote ``trial_id`` if the store agrees it is a big enough improvement; else None.

    ``root``: the worker's tenants' root (``work --root``, ``EASEML_AUTOML_ROOT``): a tenant folder
    outside it is not written (``write-failed``). The pull request goes only to the repository the
    tenant registered (:func:`check_repository`; its GitHub id pinned in the store at the first).

    ``fidelity``: the share of the budget the trial trained to when it was stopped early at a
    rung (None: all of it); a stopped trial's model is promoted like any other when it is the
    tenant's best, and its card says how far it trained. ``picked``: the trial was certified best
    on fresh data (:meth:`Store.begin_promotion`).
    """
    promo = store.begin_promotion(tenant.name, trial_id, picked=picked)
    if promo is None:
        return None
    card = build_card(tenant, promo, cand, blob, fidelity)
    model_path = card_path = None
    status, message, pr_url = "written", None, None
    try:
        if tenant.output:
            written = write_local(tenant.output, card, blob, root=root)
            if written is None:
                status, message = "superseded", "a newer promotion already wrote the output"
            else:
                model_path, card_path = written
    except FolderError as exc:
        status, message = "write-failed", exc.message
    except OSError as exc:
        status, message = "write-failed", f"cannot write to {tenant.output}: {exc}"
    if tenant.repository and status == "written":
        try:
            pr_url = open_or_update_pr(tenant.repository, tenant.name, tenant.model_path or f"models/{tenant.name}.onnx",
                                       card, blob, pin=lambda repo_id: store.pin_repository(tenant.name, repo_id))
            status = "pr-opened"
        except Superseded as exc:
            status, message = "superseded", exc.message
        except PromotionError as exc:
            status, message = "pr-failed", exc.message
    store.finish_promotion(promo.id, status, model_path=model_path, card_path=card_path, pull_request=pr_url,
                           message=message)
    if progress is not None:
        prev = "first" if promo.previous_score is None else f"was {promo.previous_score:.4f}"
        where = pr_url or model_path or "(no output configured)"
        extra = f"; {message}" if message else ""
        progress.line(f"{who}promoted {tenant.name}/{cand.name}: {promo.score:.4f} ({prev}) -> {where}{extra}")
    return Promotion(promo.id, promo.tenant, promo.trial_id, promo.candidate, promo.score, promo.previous_score,
                     status, model_path, card_path, pr_url, message)
