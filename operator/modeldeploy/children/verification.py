"""Whether the artifact a spec asks for is pinned by a digest, said in status and, when code runs, in an Event.

Loading a pickle (sklearn) or a Python module (custom) runs code from the artifact. Without spec.model.sha256,
whoever can write to the bucket or the server decides what runs in the serving pods; the runtime logs that, and
the operator says it where people look: status.artifact and a Warning Event.
"""

from __future__ import annotations

from modeldeploy.api import models as api

CODE_EXECUTING_FORMATS = frozenset({api.ModelFormat.SKLEARN.value, api.ModelFormat.CUSTOM.value})
VERIFIED = "Verified"
UNVERIFIED = "Unverified"
UNVERIFIED_ARTIFACT = "UnverifiedArtifact"


def artifact_status(resource: api.ModelDeployment, revision: str) -> api.ArtifactStatus:
    """What status.artifact says about the revision the spec asks for."""
    model = resource.spec.model
    fmt = str(model.format)
    if model.sha256:
        reason, message = VERIFIED, f"{model.version} is served only with sha256 {model.sha256[:12]}..."
    elif fmt in CODE_EXECUTING_FORMATS:
        reason = UNVERIFIED_ARTIFACT
        message = (
            f"{model.version}: format {fmt} runs code from the artifact when it loads, and spec.model.sha256 is "
            "empty, so nothing pins the artifact to the one reviewed (`modeldeploy-runtime digest FILE` gives it)"
        )
    else:
        reason, message = UNVERIFIED, f"{model.version}: spec.model.sha256 is empty; the artifact is not pinned"
    return api.ArtifactStatus(
        revision=revision, version=model.version, verified=bool(model.sha256), reason=reason, message=message
    )


def unverified_warning(previous: api.ArtifactStatus | None, current: api.ArtifactStatus) -> str | None:
    """The message of a Warning Event, once for each revision that would run unpinned code."""
    if current.reason != UNVERIFIED_ARTIFACT:
        return None
    if previous is not None and previous.revision == current.revision and previous.reason == current.reason:
        return None
    return current.message
