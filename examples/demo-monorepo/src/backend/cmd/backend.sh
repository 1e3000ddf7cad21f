#!/bin/sh
echo "backend v0.3.6-dev"
