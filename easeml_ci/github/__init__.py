"""The GitHub integration: REST client, PR report (summary, sticky comment, annotations,
outputs), new-test-set alert issues, and the action's entry point."""
from .api import (
    GitHubClient,
    GitHubConflict,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    GitHubValidation,
    RetryPolicy,
)

__all__ = [
    "GitHubClient", "GitHubConflict", "GitHubError", "GitHubForbidden", "GitHubNotFound",
    "GitHubValidation", "RetryPolicy",
]
