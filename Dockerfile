# streamherd's image: the operator (`streamherd run`), the janitor command its CronJobs run
# (`streamherd janitor`), and the consumer SDK. Build with any OCI builder:
#   docker build -t streamherd:dev .                    # the public slim Python base
#   buildah bud --build-arg BASE=localhost/streamherd-base:bookworm -t streamherd:dev .
# BASE needs python3 (>= 3.11) with the venv module: python:3.11-slim or newer, or Debian
# bookworm with python3-venv (what `make image` builds here without any registry).
ARG BASE=docker.io/library/python:3.12-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/streamherd
COPY pyproject.toml README.md constraints.txt /src/
COPY operator /src/operator
# A wheel from the source, then only it and its dependencies into the venv, at the versions
# constraints.txt pins (what the suite passed with): no build tools, sources or caches reach
# the final stage.
RUN /opt/streamherd/bin/pip install -c /src/constraints.txt /src \
 && /opt/streamherd/bin/pip uninstall -y pip setuptools wheel \
 && find /opt/streamherd -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM ${BASE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="streamherd" \
      org.opencontainers.image.description="Redis Streams consumer groups, run for you on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/streamherd /opt/streamherd
# Read-only root file system in the cluster: no bytecode written next to the sources; the
# client certificate for mutual TLS is kept in memory (memfd), so nothing needs to be writable;
# /tmp (an emptyDir where the chart mounts one) stays the temporary directory.
ENV PATH=/opt/streamherd/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
# A numeric non-root user (the restricted Pod Security profile checks runAsNonRoot by uid).
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["streamherd"]
CMD ["run"]
