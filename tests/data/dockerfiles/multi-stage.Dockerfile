FROM node:18-alpine AS Deps
FROM deps AS build
FROM DEPS
FROM later
FROM scratch AS later
FROM SCRATCH
COPY --from=build /a /a
COPY --from=1 /b /b
COPY --from=LATER /c /c
COPY --from=nginx:stable /etc/nginx /etc/nginx
ADD --from=alpine:3.18 /etc/os-release /os-release
