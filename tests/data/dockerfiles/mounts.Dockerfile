ARG TOOLS=docker.io/library/busybox:1.36
FROM golang:1.21-alpine AS build
ARG TOOLS
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=bind,from=${TOOLS},source=/bin,target=/tools \
    --mount=type=bind,from=build,target=/self \
    --mount=type=cache,from=redis:7-alpine,source=/data,target=/seed \
    go build ./...
