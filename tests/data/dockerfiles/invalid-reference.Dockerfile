FROM alpine
FROM docker.io/Library/Ubuntu:22.04
