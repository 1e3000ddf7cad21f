FROM alpine:3.18
RUN <<ONE cat <<-"TWO" > /out; <<'THREE' sh
FROM not-an-image:1
ONE
		FROM not-an-image:2
	TWO
FROM not-an-image:3
THREE
COPY <<EOF /etc/config
COPY --from=not-an-image:4 / /
EOF
RUN cat <<< "here-string, not a heredoc"
FROM busybox:1.36
