FROM --platform=$BUILDPLATFORM golang:1.21-alpine AS build
ARG TARGETARCH
FROM --platform=${TARGETPLATFORM} alpine:3.18-${TARGETARCH}
FROM busybox:${BUILDOS}
