FrOm redis:7-alpine AS cache
RUN echo one \
    two
from CACHE
copy --FROM=postgres:15-alpine /usr/local/bin/pg_dump /pg_dump
