"""The small, closed sets of failure reasons the runtime reports.

Both sets end up in places other components depend on (metric labels, the health response body), so they are
enums: a new reason is a deliberate, documented change, never a free-form string that explodes label
cardinality.
"""

from __future__ import annotations

from enum import StrEnum


class LoadFailure(StrEnum):
    """Why the model is not being served."""

    INVALID_CONFIG = "invalid_config"
    NOT_FOUND = "not_found"
    DOWNLOAD_FAILED = "download_failed"
    DIGEST_MISMATCH = "digest_mismatch"
    INVALID_ARTIFACT = "invalid_artifact"
    TOO_LARGE = "too_large"
    NO_CREDENTIALS = "no_credentials"

    @property
    def retryable(self) -> bool:
        # Only the network can heal by itself; a wrong digest or a corrupt file stays wrong until a new
        # revision. Credentials count as the network: an instance-metadata or token endpoint may answer later.
        return self in (LoadFailure.DOWNLOAD_FAILED, LoadFailure.NO_CREDENTIALS)


class RequestError(StrEnum):
    """Why a prediction request failed: the `reason` label of modeldeploy_model_errors_total."""

    NOT_READY = "not_ready"
    INVALID_INPUT = "invalid_input"
    PREDICTION_FAILED = "prediction_failed"
    INVALID_OUTPUT = "invalid_output"


class ModelLoadError(Exception):
    def __init__(self, reason: LoadFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(ValueError):
    """The request's payload cannot be fed to the model."""


class InvalidOutputError(ValueError):
    """The model answered with something the protocol cannot carry."""
