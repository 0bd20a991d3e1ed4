# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a small non-root runtime image.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# make docker passes the version (git describe), as make build does.
ARG VERSION=0.1.0
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/icey-server ./cmd/icey-server

# Debian slim with ffmpeg (transcodes AAC audio, non-H.264 video, devices
# and other URLs; without it those sources cannot play) and CA certificates
# (HTTPS sources and health-check pings).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/icey --create-home icey \
 && mkdir -p /etc/icey-server /var/lib/icey/recordings \
 && chown -R icey /var/lib/icey
COPY --from=build /out/icey-server /usr/local/bin/icey-server
USER 10001
WORKDIR /var/lib/icey
ENV ICEY_RECORD_DIR=/var/lib/icey/recordings
# Mount a config file at /etc/icey-server/config.json and set
# ICEY_CONFIG=/etc/icey-server/config.json (not --config): the server and the
# HEALTHCHECK probe then both read it, so a port set there is probed too.
# 4500/tcp HTTP, WebSocket, WHEP; 4500/udp WebRTC media; 3478 TURN.
EXPOSE 4500/tcp 4500/udp 3478/tcp 3478/udp
# No curl in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["icey-server", "healthcheck"]
ENTRYPOINT ["icey-server"]
