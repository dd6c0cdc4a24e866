"""The GitHub integration: the REST client (``api``), the PR report (``report``: summary,
annotations, outputs; ``comment``: the sticky comment), new-test-set alert issues
(``alert_issue``), the head commit's pull request and status (``provenance``), workflow commands
(``workflow``), and the Action's run (``action.run_action``, which the console command
``easeml-ci action`` in ``easeml_ci.cli.action`` calls; action.yml runs that command).

The client's names are loaded on first use (PEP 562), so importing a submodule for a constant
does not import requests into every `easeml-ci` start-up.
"""
__all__ = [
    "GitHubClient", "GitHubConflict", "GitHubError", "GitHubForbidden", "GitHubNotFound",
    "GitHubValidation", "GitHubRateLimited", "GitHubAmbiguous", "write_once",
]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
