# syntax=docker/dockerfile:1
# One image for shopmesh's Python processes: the three services, the control plane, the producer and the two
# dataflows. docker-compose.yml runs it once per process, each with its own command. Multi-stage: the build
# stage has pip and the code generator's work, the runtime stage only the virtualenv and the sources.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (requirements.lock, each checked against its hash), so that a change to the code does not
# reinstall them.
COPY pyproject.toml README.md requirements.lock ./
COPY shopmesh/__init__.py shopmesh/
COPY services/__init__.py services/
COPY dataflows/__init__.py dataflows/
RUN pip install --require-hashes -r requirements.lock && pip install --no-deps --editable .
COPY protos/ protos/
COPY shopmesh/ shopmesh/
COPY services/ services/
COPY dataflows/ dataflows/
COPY envoy/ envoy/
# The gRPC code and Envoy's descriptor set, generated from protos/ as `shopmesh install` does natively.
RUN python -c "from shopmesh.tooling import codegen; codegen.generate()"

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home shopmesh \
    && mkdir -p /var/lib/shopmesh/recovery /var/lib/shopmesh/envoy \
    && chown -R shopmesh:shopmesh /var/lib/shopmesh
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOPMESH_HOST=0.0.0.0 \
    SHOPMESH_VAR_DIR=/var/lib/shopmesh
WORKDIR /app
USER shopmesh
CMD ["shopmesh", "--help"]
