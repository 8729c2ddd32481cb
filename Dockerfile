# syntax=docker/dockerfile:1
# Two images from one source tree:
#   docker build --target operator     -t modeldeploy-operator:0.1.0 .
#   docker build --target model-server -t modeldeploy-server:0.1.0 .
# Both run as the non-root user 65532 with no shell tools beyond python:slim's.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modeldeploy ./modeldeploy
COPY model_operator ./model_operator
COPY model_server ./model_server
COPY devcluster ./devcluster

# The operator needs only kopf, the Kubernetes client and the spec/render dependencies; take
# their version bounds from pyproject.toml so there is one source of truth.
FROM base AS operator-venv
RUN python -m venv /venv \
 && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
keep = {'kopf', 'kubernetes', 'pydantic', 'click', 'pyyaml'}; \
print('\n'.join(d for d in deps if d.split('>')[0].split('<')[0].split('[')[0].strip().lower() in keep))" \
    > /tmp/operator-requirements.txt \
 && /venv/bin/pip install -r /tmp/operator-requirements.txt \
 && /venv/bin/pip install --no-deps .

FROM base AS server-venv
RUN python -m venv /venv && /venv/bin/pip install .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 65532 modeldeploy && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin modeldeploy
USER 65532:65532
ENTRYPOINT ["modeldeploy"]

FROM runtime AS operator
COPY --from=operator-venv /venv /venv
EXPOSE 8080
CMD ["operator"]

FROM runtime AS model-server
COPY --from=server-venv /venv /venv
EXPOSE 8000
