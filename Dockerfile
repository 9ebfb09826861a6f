# gosmtp-dup container image. Not built on the development machines of this project (they run no
# Docker engine): see docs/operations.md for what was and was not verified.
FROM node:20-bookworm-slim

WORKDIR /app
COPY package.json package-lock.json ./
COPY bin ./bin
COPY src ./src
COPY plugins ./plugins
# npm ci runs `prepare`, which bundles the sources into dist/ (bin/build.mjs).
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Never root: the spool is the only place the router writes.
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin gosmtp \
 && mkdir -p /var/spool/gosmtp-dup /etc/smtp-dup \
 && chown gosmtp /var/spool/gosmtp-dup
USER gosmtp

# The configuration is read from /etc/smtp-dup/config.yaml (mount it) or from SMTP_DUP_* variables.
# The spool is queue.dir from that file (config.example.yaml: /var/spool/gosmtp-dup, the volume);
# no variable here overrides it. With variables alone, pass SMTP_DUP_QUEUE_DIR=/var/spool/gosmtp-dup.
# /healthz is served on loopback inside the container, for the healthcheck below.
ENV SMTP_DUP_METRICS_LISTEN=127.0.0.1:9090
VOLUME ["/var/spool/gosmtp-dup"]
EXPOSE 2525

HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM drains: transactions in progress finish, pending copies stay in the spool volume.
STOPSIGNAL SIGTERM
CMD ["node", "bin/gosmtp-dup.mjs", "start"]
