"""Conversions between seldon's decoded payloads and the model libraries."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest

from modeldeploy_runtime.errors import InvalidInputError, InvalidOutputError
from modeldeploy_runtime.payload import as_numeric, as_tabular, numeric_summary, to_response


def test_numeric_strings_become_numbers() -> None:
    # seldon turns a mixed ndarray such as [[1, "2"]] into an array of strings.
    rows = as_tabular(np.array([["1", "2.5"]]), numeric=True)

    assert rows.dtype == np.float64
    assert rows.tolist() == [[1.0, 2.5]]


def test_numeric_input_is_passed_through_untouched() -> None:
    array = np.array([[1, 2]], dtype=np.int64)

    assert as_tabular(array, numeric=True) is array


def test_a_flat_row_is_a_batch_of_one() -> None:
    assert as_tabular(np.array([1.0, 2.0, 3.0]), numeric=True).shape == (1, 3)


def test_words_are_refused_where_numbers_are_needed() -> None:
    with pytest.raises(InvalidInputError, match="not numeric"):
        as_tabular(np.array([["a", "b"]]), numeric=True)


def test_words_are_kept_for_models_that_may_take_them() -> None:
    rows = as_tabular(np.array([["red", "1"]]), numeric=False)

    assert rows.dtype == object
    assert rows.tolist() == [["red", "1"]]


@pytest.mark.parametrize("payload", [{"a": 1}, "text", b"bytes", np.float64(3.0)])
def test_non_array_payloads_are_refused(payload: object) -> None:
    with pytest.raises(InvalidInputError):
        as_tabular(payload, numeric=True)


def test_more_than_two_dimensions_are_not_rows() -> None:
    with pytest.raises(InvalidInputError, match="2 dimensions"):
        as_tabular(np.zeros((1, 2, 3)), numeric=True)


def test_ragged_rows_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        as_numeric([[1.0, 2.0], [3.0]])


def test_as_numeric_casts_to_the_requested_dtype_and_keeps_the_shape() -> None:
    array = as_numeric(np.ones((2, 3, 4)), np.float32)

    assert array.dtype == np.float32
    assert array.shape == (2, 3, 4)


def test_lists_of_numpy_scalars_become_serializable_arrays() -> None:
    # The failure this guards against: json cannot encode a list of np.int64.
    with pytest.raises(TypeError):
        json.dumps([np.int64(1)])

    response = to_response([np.int64(1), np.int64(0)])

    assert isinstance(response, np.ndarray)
    assert json.dumps(response.tolist()) == "[1, 0]"


def test_a_scalar_output_becomes_one_value() -> None:
    assert to_response(np.float32(0.5)).tolist() == [0.5]


def test_complex_outputs_are_refused() -> None:
    with pytest.raises(InvalidOutputError):
        to_response(np.array([1 + 2j]))


def test_numeric_summary_bounds_rows_and_columns() -> None:
    output = np.arange(30.0).reshape(10, 3)

    summary = numeric_summary(output, max_rows=4, max_columns=2)

    assert summary is not None
    assert summary.shape == (4, 2)
    assert summary.tolist() == [[0, 1], [3, 4], [6, 7], [9, 10]]


def test_numeric_summary_of_a_vector_is_one_column() -> None:
    summary = numeric_summary(np.array([1, 0, 1]), max_rows=100, max_columns=8)

    assert summary is not None
    assert summary.shape == (3, 1)


@pytest.mark.parametrize("output", [np.array(["cat", "dog"]), np.zeros((2, 2, 2)), np.array([])])
def test_numeric_summary_skips_what_a_histogram_cannot_hold(output: npt.NDArray[np.generic]) -> None:
    assert numeric_summary(output, max_rows=100, max_columns=8) is None
