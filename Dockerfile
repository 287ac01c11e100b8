FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sahayak_rpc ./sahayak_rpc
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --gid 10001 sahayak \
 && useradd --uid 10001 --gid sahayak --no-create-home --shell /usr/sbin/nologin sahayak \
 && mkdir /data && chown sahayak:sahayak /data
COPY --from=build /install /usr/local
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# Plaintext beyond loopback must be asked for: set SAHAYAK_SERVER_TLS_CERT and
# SAHAYAK_SERVER_TLS_KEY (mounted files) to serve TLS instead.
ENV SAHAYAK_SERVER_HOST=0.0.0.0 \
    SAHAYAK_SERVER_ALLOW_PLAINTEXT=true \
    SAHAYAK_SERVER_PORT=50051 \
    SAHAYAK_SERVER_DB=/data/sahayak.db \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONUNBUFFERED=1
EXPOSE 50051
# `sahayak-rpc health` (like every client command) finds the server at 127.0.0.1:$SAHAYAK_SERVER_PORT,
# so the check follows a changed port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["sahayak-rpc", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sahayak-rpc"]
CMD ["serve"]
