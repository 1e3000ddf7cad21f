FROM docker.io/library/redis:7-alpine@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae AS redis
FROM scratch
COPY --from=redis /usr/local/bin/redis-server /redis-server
