# syntax=docker/dockerfile:1
# matrix-compat-proxy container image.
#   docker build -t matrix-compat-proxy .
#   docker run -v /srv/mcp/config.yaml:/etc/matrix-compat-proxy/config.yaml:ro -p 8009:8009 matrix-compat-proxy
# Configuration: /etc/matrix-compat-proxy/config.yaml (config/example.yaml documents every key). Secrets come from
# files (*_path keys, e.g. docker/compose secrets under /run/secrets/) or from environment variables (${NAME} in the
# config). Nothing secret is baked into the image.
# No container engine runs in this project's CI: test/unit/dockerfile.test.ts checks what can be checked without one
# (every COPY source exists and is not excluded by .dockerignore, the user is not root, the paths match
# docker-compose.yml) and test/interop/deploy-layouts.test.ts runs the ENTRYPOINT + CMD and the HEALTHCHECK command
# natively against the compose configuration.

ARG NODE_VERSION=24

# ---- build: all dependencies, compile TypeScript to dist/
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` runs the `prepare` script, which compiles src/ into dist/.
RUN npm ci --no-audit --no-fund

# ---- runtime: production dependencies only, compiled code, non-root
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HEALTHCHECK_URL=http://127.0.0.1:8009/health
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile again and needs the dev dependencies; dist/ comes from the build stage.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && rm -rf /root/.npm
COPY bin ./bin
COPY config/example.yaml ./config/example.yaml
COPY --from=build /app/dist ./dist
RUN mkdir -p /etc/matrix-compat-proxy
# The node images' unprivileged user (uid 1000); the proxy needs no privilege (its ports are above 1024).
USER node
# 8009: clients (listen), 8010: the homeserver-facing API (homeserver.listen), 9009: metrics (metrics.listen).
EXPOSE 8009 8010 9009
# GET /health of the client listener (HEALTHCHECK_URL when the config listens elsewhere); node has fetch built in, so
# the image needs no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL,{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM (docker stop) drains in-flight requests for up to 10 s, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/matrix-compat-proxy.js"]
CMD ["--config", "/etc/matrix-compat-proxy/config.yaml"]
