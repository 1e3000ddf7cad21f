# syntax=docker/dockerfile:1.7@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
# check=skip=all
FROM localhost:5000/base/image:v2@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
FROM [::1]:5000/tools
