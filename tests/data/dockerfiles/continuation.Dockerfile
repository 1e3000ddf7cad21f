FROM \
    # a comment inside the continuation

    ubuntu:22.04 \
    AS base
RUN apt-get update && \
    # install things
    apt-get install -y curl \
    && rm -rf /var/lib/apt/lists/*
COPY \
  --from=nginx:stable \
  /etc/nginx /etc/nginx
