ARG REGISTRY=docker.io
ARG NODE_MAJOR=18
ARG NODE_IMAGE=${REGISTRY}/library/node:${NODE_MAJOR}-alpine
ARG SLIM
ARG EMPTY=""
FROM $NODE_IMAGE AS deps
FROM python:3.11${SLIM:+-slim} AS py
FROM python:3.11${EMPTY:--bookworm} AS py2
FROM "golang:1.21-alpine" AS go
