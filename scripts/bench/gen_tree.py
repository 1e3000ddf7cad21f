#!/usr/bin/env python3
"""Generate a monorepo-like tree of N Dockerfiles with ARG versions and multi-stage builds.

Usage: gen_tree.py DIR [N]   (N defaults to 10000; the tree is rebuilt from scratch)
"""
import os
import random
import shutil
import sys

BASES = [
    ("golang", ["1.20-alpine", "1.21-alpine", "1.22-alpine"]),
    ("node", ["18-alpine", "20-alpine"]),
    ("python", ["3.10-slim", "3.11-slim", "3.12-slim"]),
    ("rust", ["1.75", "1.78-slim"]),
]
RUNTIMES = ["alpine:3.18", "alpine:3.19", "debian:bookworm-slim", "ubuntu:22.04", "nginx:stable"]


def dockerfile(rng: random.Random, i: int) -> str:
    name, tags = rng.choice(BASES)
    tag = rng.choice(tags)
    version, _, suffix = tag.partition("-")
    runtime = rng.choice(RUNTIMES)
    lines = [
        f"# service {i}",
        f"ARG {name.upper()}_VERSION={version}",
        f"ARG RUNTIME={runtime}",
        "",
        f"FROM {name}:${{{name.upper()}_VERSION}}{'-' + suffix if suffix else ''} AS build",
        "WORKDIR /src",
        "COPY . .",
        "RUN --mount=type=cache,target=/root/.cache \\",
        "    # build the service",
        f"    make build SERVICE=svc{i}",
        "",
        "FROM build AS test",
        "RUN make test",
        "",
        "FROM ${RUNTIME}",
        "COPY --from=build /src/out /app",
        'ENTRYPOINT ["/app/run"]',
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    root = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rng = random.Random(42)
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        d = os.path.join(root, "services", f"group{i // 100:03}", f"svc{i:05}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "Dockerfile"), "w") as f:
            f.write(dockerfile(rng, i))
        with open(os.path.join(d, "main.go"), "w") as f:
            f.write("package main\n")


if __name__ == "__main__":
    main()
