"""Between seldon's decoded payloads and what the model libraries accept or return.

seldon hands `predict` an ndarray for `ndarray` and `tensor` payloads (strings in a mixed `ndarray` make it an
array of strings), a dict for `jsonData`, a str for `strData` and bytes for `binData`. On the way back it can
serialize an ndarray, but not a Python list holding numpy scalars ("int64 is not JSON serializable"), so every
answer leaves here as an ndarray.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy_runtime.errors import InvalidInputError, InvalidOutputError

# Numeric kinds: bool, signed, unsigned, float.
_NUMERIC_KINDS = frozenset("biuf")


def as_array(features: object) -> npt.NDArray[Any]:
    if isinstance(features, dict | str | bytes):
        raise InvalidInputError(f"expected a data.ndarray or data.tensor payload, got {type(features).__name__}")
    try:
        array = np.asarray(features)
    except (ValueError, TypeError) as error:  # ragged rows
        raise InvalidInputError(f"payload is not a rectangular array: {error}") from error
    if array.ndim == 0:
        raise InvalidInputError("payload is a scalar; send a row or a batch of rows")
    return array


def as_numeric(features: object, dtype: npt.DTypeLike = np.float64) -> npt.NDArray[Any]:
    """Any shape, cast to a numeric dtype; strings holding numbers are accepted, other strings are not."""
    array = as_array(features)
    if array.dtype.kind in _NUMERIC_KINDS and array.dtype == np.dtype(dtype):
        return array
    try:
        return array.astype(dtype)
    except (ValueError, TypeError) as error:
        raise InvalidInputError(f"payload is not numeric: {error}") from error


def as_rows(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Tabular models want (rows, features): a single flat row becomes a batch of one."""
    if array.ndim == 1:
        return array.reshape(1, -1)
    if array.ndim != 2:
        raise InvalidInputError(f"expected rows of features (2 dimensions), got shape {list(array.shape)}")
    return array


def as_tabular(features: object, *, numeric: bool) -> npt.NDArray[Any]:
    """Rows for tabular models; non-numeric input is kept when the model may take it (sklearn pipelines)."""
    array = as_array(features)
    if array.dtype.kind not in _NUMERIC_KINDS:
        try:
            array = array.astype(np.float64)
        except (ValueError, TypeError) as error:
            if numeric:
                raise InvalidInputError(f"payload is not numeric: {error}") from error
            array = array.astype(object)
    return as_rows(array)


def to_response(output: object) -> npt.NDArray[Any]:
    """An ndarray seldon can serialize: numpy scalars, lists of them and 0-d results included."""
    try:
        array = np.asarray(output)
    except (ValueError, TypeError) as error:
        raise InvalidOutputError(f"model output is not an array: {error}") from error
    if array.ndim == 0:
        array = array.reshape(1)
    if array.dtype.kind in "cmMV":
        raise InvalidOutputError(f"model output of dtype {array.dtype} cannot be sent as JSON")
    return array


def numeric_summary(output: npt.NDArray[Any], max_rows: int, max_columns: int) -> npt.NDArray[np.float64] | None:
    """The (rows, columns) slice of a prediction the output histogram observes; None when not numeric.

    Bounded on both axes so a huge batch costs the request no more than a fixed number of observations.
    """
    if output.dtype.kind not in _NUMERIC_KINDS or output.size == 0:
        return None
    if output.ndim == 1:
        table = output.reshape(-1, 1)
    elif output.ndim == 2:
        table = output
    else:
        return None
    return np.asarray(table[:max_rows, :max_columns], dtype=np.float64)
