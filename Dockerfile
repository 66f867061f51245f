# syntax=docker/dockerfile:1
# kmsg-forwarder image: a slim Python runtime, wheels only, no compilers, non-root.
#   docker build -t kmsg-forwarder .
#   docker run --rm --device /dev/kmsg --cap-drop ALL --cap-add SYSLOG --read-only \
#     -v kmsg-state:/var/lib/kmsg-forwarder kmsg-forwarder
ARG PYTHON_VERSION=3.11

# ---- build: turn the project and its dependencies into a virtualenv, from wheels only.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forwarder ./forwarder
# The project itself is pure Python (built here into a wheel); every dependency must come
# as a binary wheel, so nothing is ever compiled and no compiler is needed.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --only-binary=:all: --wheel-dir /wheels /wheels/kmsg_forwarder-*.whl
# --copies: the venv gets its own interpreter binary, the only file given CAP_SYSLOG below.
# The entry point's shebang must name that binary: checked, not assumed.
RUN python -m venv --copies /opt/venv \
 && /opt/venv/bin/python3 -m pip install --no-index --only-binary=:all: --find-links /wheels kmsg-forwarder \
 && /opt/venv/bin/python3 -m pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python3 -m compileall -q /opt/venv \
 && test "$(head -n 1 /opt/venv/bin/kmsg-forwarder)" = "#!/opt/venv/bin/python3"

# ---- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kmsg-forwarder" \
      org.opencontainers.image.description="Ships the Linux kernel log (/dev/kmsg) to Kafka, Loki, Elasticsearch, HTTP, files or stdout, with checkpoints and gap reports." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kmsg-forwarder/kmsg-forwarder" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim-bookworm"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed, unprivileged uid/gid (65532, as distroless "nonroot") so hostPath state
# directories can be chowned to it from outside.
RUN groupadd --system --gid 65532 kmsg \
 && useradd --system --uid 65532 --gid kmsg --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin kmsg \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/kmsg-forwarder

COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/config.toml /etc/kmsg-forwarder/config.toml

# Reading /dev/kmsg needs CAP_SYSLOG (kernel.dmesg_restrict=1). A non-root process loses
# the container's capabilities at exec, and neither Docker nor Kubernetes sets ambient
# capabilities, so the forwarder's own interpreter carries CAP_SYSLOG as a file
# capability (permitted + effective), written as the raw security.capability xattr
# (VFS_CAP_REVISION_2 | EFFECTIVE; SYSLOG is bit 34, i.e. bit 2 of the high word) to
# avoid installing libcap's setcap. The container must still be granted SYSLOG
# (--cap-add SYSLOG), and no_new_privs (allowPrivilegeEscalation: false) would drop it.
RUN python3 -c 'import os, struct; os.setxattr("/opt/venv/bin/python3", "security.capability", struct.pack("<5I", 0x02000001, 0, 0, 1 << 2, 0))'

USER 65532:65532
WORKDIR /var/lib/kmsg-forwarder
VOLUME ["/var/lib/kmsg-forwarder"]
EXPOSE 9108

# /healthz: alive and capturing; never fails because a sink is down. Uses the system
# interpreter (no file capability), so the check runs in any container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('KMSG_FORWARDER_HEALTH_URL', 'http://127.0.0.1:9108/healthz'), timeout=4)"]

ENTRYPOINT ["kmsg-forwarder"]
CMD ["run", "--config", "/etc/kmsg-forwarder/config.toml"]
