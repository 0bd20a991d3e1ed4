# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a small non-root runtime image.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/icey-server ./cmd/icey-server

# Debian slim (not distroless) so the optional ffmpeg transcode path can be
# added with one line: RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/icey --create-home icey \
 && mkdir -p /etc/icey-server /var/lib/icey/recordings \
 && chown -R icey /var/lib/icey
COPY --from=build /out/icey-server /usr/local/bin/icey-server
USER 10001
WORKDIR /var/lib/icey
ENV ICEY_RECORD_DIR=/var/lib/icey/recordings
# 4500/tcp HTTP, WebSocket, WHEP; 4500/udp WebRTC media; 3478 TURN.
EXPOSE 4500/tcp 4500/udp 3478/tcp 3478/udp
# No curl in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["icey-server", "healthcheck"]
ENTRYPOINT ["icey-server"]
