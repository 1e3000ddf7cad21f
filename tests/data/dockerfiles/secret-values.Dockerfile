# Official images pin the release key by fingerprint and fetch it with gpg --recv-keys.
FROM debian:bookworm-slim
ENV GPG_KEY 3F1C0A5E7D2B94C8E61A07F53B9D2C4E8A6F1D70
ENV GPG_KEYS="0x6A010C5166006599 A4A9406876FCBD3C456770C88C718D3B5072E1F5"
# Where the credentials are mounted at run time: a path, not the secret.
ENV GOOGLE_APPLICATION_CREDENTIALS=/run/app/key.json
ARG SSH_KEY_PATH=~/.ssh/id_ed25519
# These hold secrets, and stay in the image's history.
ENV REGISTRY_PASSWORD=Adm1n2024
ARG NPM_TOKEN
