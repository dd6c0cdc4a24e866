"""The GitHub integration: REST client, PR report (summary, sticky comment, annotations,
outputs), new-test-set alert issues, and the action's entry point.

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
