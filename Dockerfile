# vendorsync daemon image: slim, non-root, health-checked.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENDORSYNC_CONFIG=/app/config/vendorsync.toml

WORKDIR /app

RUN groupadd --system vendorsync \
    && useradd --system --gid vendorsync --home-dir /app --shell /usr/sbin/nologin vendorsync

# The install steps below are the ones .ci/run replays (scripts/check-image.sh).
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY sandbox ./sandbox
COPY bench ./bench
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir . \
    && mkdir -p /app/var \
    && chown vendorsync:vendorsync /app/var

USER vendorsync
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["vendorsync"]
CMD ["run"]
