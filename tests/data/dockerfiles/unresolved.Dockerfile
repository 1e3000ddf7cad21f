ARG BASE
FROM ${BASE}
FROM alpine:${MISSING}
FROM ubuntu:${V#22}
FROM nginx:stable
