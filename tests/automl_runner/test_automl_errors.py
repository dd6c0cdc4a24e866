"""One root exception for the AutoML queue, each error with its exit code and its context."""
from __future__ import annotations

import pytest

from automl_runner import errors
from automl_runner.candidates.search_space import classification_spaces
from automl_runner.scheduling.matrices import load_matrix
from automl_runner.scheduling.registry import make_scheduler
from easeml_ci.errors import EasemlError


@pytest.mark.parametrize("cls", [errors.SchedulerError, errors.SearchSpaceError, errors.MatrixError])
def test_the_three_value_errors_sit_under_the_package_root(cls):
    assert issubclass(cls, errors.AutomlError) and issubclass(cls, EasemlError)
    assert issubclass(cls, ValueError)  # callers that caught ValueError still do
    assert cls.exit_code == 2


def test_every_public_error_descends_from_the_root():
    found = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)
             and v.__module__ == errors.__name__]
    assert len(found) >= 10
    assert all(issubclass(c, errors.AutomlError) for c in found)


def test_an_unknown_scheduler_is_a_scheduler_error_with_exit_2():
    with pytest.raises(errors.AutomlError) as info:
        make_scheduler("fastest")
    assert type(info.value) is errors.SchedulerError and info.value.exit_code == 2
    assert "unknown scheduler 'fastest'" in str(info.value)


def test_a_matrix_error_carries_its_file_and_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("tenant,candidate,quality,cost\nt1,c1,0.5,-1\n")
    with pytest.raises(errors.MatrixError) as info:
        load_matrix(path)
    exc = info.value
    assert (exc.path, exc.line) == (str(path), 2)
    assert str(exc) == f"{path}:2: column cost must be >= 0 seconds, got -1"
    assert exc.problem == "column cost must be >= 0 seconds, got -1"
    header = tmp_path / "h.csv"
    header.write_text("")
    with pytest.raises(errors.MatrixError) as info:
        load_matrix(header)
    assert info.value.line is None and str(info.value).startswith(f"{header}: empty file")


def test_a_search_space_error_is_raised_for_a_value_outside_its_choices():
    space = next(iter(classification_spaces().values()))
    with pytest.raises(errors.SearchSpaceError):
        space.check({"no_such_hyperparameter": 1})
