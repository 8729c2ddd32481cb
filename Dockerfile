# syntax=docker/dockerfile:1
# Two images from one source tree:
#   docker build --target operator     -t modeldeploy-operator:0.1.0 .
#   docker build --target model-server -t modeldeploy-server:0.1.0 .
# Both run as the non-root user 65532 with no shell tools beyond python:slim's.
# Without Docker, `make images` builds the same targets with buildah on a Debian base made by
# debootstrap (devcluster/images.py passes it as PYTHON_IMAGE).
#
# Layer order keeps a source change cheap: the dependencies are installed from pyproject.toml
# alone, the sources are copied after them and installed with --no-deps.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Each image installs exactly one dependency set of pyproject.toml: the operator `.[operator]`
# (no FastAPI, scikit-learn or onnxruntime), the server `.[server]` (no kopf or Kubernetes client).
FROM python AS requirements
WORKDIR /src
COPY pyproject.toml ./
COPY scripts/requirements.py ./scripts/
RUN python scripts/requirements.py operator > operator.txt && python scripts/requirements.py server > server.txt

# A current pip first: bookworm's (23.0) backtracks for minutes over today's metadata.
FROM python AS operator-deps
COPY --from=requirements /src/operator.txt /tmp/requirements.txt
RUN python -m venv /venv && /venv/bin/pip install --quiet --upgrade "pip>=24.2" \
 && /venv/bin/pip install -r /tmp/requirements.txt

FROM python AS server-deps
COPY --from=requirements /src/server.txt /tmp/requirements.txt
RUN python -m venv /venv && /venv/bin/pip install --quiet --upgrade "pip>=24.2" \
 && /venv/bin/pip install -r /tmp/requirements.txt

# The sources alone, on scratch: every COPY layer holds only them (cheap with buildah's vfs driver).
FROM scratch AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modeldeploy ./modeldeploy
COPY model_operator ./model_operator
COPY model_server ./model_server

# The project itself, then what a running image does not need: pip and setuptools (nothing
# installs at run time) and the packages' own test suites.
FROM operator-deps AS operator-venv
COPY --from=source /src /src
RUN /venv/bin/pip install --no-deps /src \
 && /venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

FROM server-deps AS server-venv
COPY --from=source /src /src
RUN /venv/bin/pip install --no-deps /src \
 && /venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

FROM python AS runtime
ENV PATH=/venv/bin:$PATH
RUN groupadd --gid 65532 modeldeploy && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin modeldeploy
USER 65532:65532
ENTRYPOINT ["modeldeploy"]

FROM runtime AS operator
COPY --from=operator-venv /venv /venv
EXPOSE 8080
CMD ["operator"]

FROM runtime AS model-server
COPY --from=server-venv /venv /venv
# REST (v2 and /api) on 8000; Open Inference Protocol v2 gRPC on 9000 (`--grpc-port`; 0 turns it off)
ENV MODELDEPLOY_GRPC_PORT=9000
EXPOSE 8000 9000
