# The operator image: `modeldeploy run`.
#
# NOT BUILT IN CI: the development machine and CI have no Docker engine, so this file cannot be built or tested
# there. Build it from the repository root:
#     docker build -t modeldeploy:dev .
#
# Installs the root package (operator/modeldeploy) only, with exactly the dependencies uv.lock pins; the model
# server is another image (runtime/Dockerfile). The final image has no compiler and no uv, and runs as
# uid 10001 with nothing to write, so it runs with readOnlyRootFilesystem.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
# The lock and the workspace's manifests first: the dependency layer is rebuilt only when they change.
COPY pyproject.toml uv.lock README.md ./
COPY runtime/pyproject.toml runtime/pyproject.toml
RUN uv export --frozen --package modeldeploy --no-dev --no-emit-workspace --output-file /tmp/requirements.txt \
    && uv venv /opt/venv --python /usr/local/bin/python3.12 \
    && uv pip install --python /opt/venv/bin/python --require-hashes --no-deps --compile-bytecode \
        -r /tmp/requirements.txt
COPY operator/ operator/
RUN uv pip install --python /opt/venv/bin/python --no-deps --compile-bytecode .

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 modeldeploy \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modeldeploy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["modeldeploy", "run"]
