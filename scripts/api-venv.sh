#!/usr/bin/env bash
# Creates (once) the Python virtualenv the API tests use, OUTSIDE the work
# tree: ${EMBER_CACHE:-$HOME/.cache/ember}/venv with boto3, pytest and
# prometheus_client (its exposition-format parser) and requests-unixsocket (the
# Unix-socket HTTP client Firecracker's Python users drive its API with, for
# tests/fcapi) and Pillow (decodes the PNG plots tests/bench checks) from PyPI.
# Prints the venv path. Idempotent.
set -euo pipefail
venv="${EMBER_CACHE:-$HOME/.cache/ember}/venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import boto3, prometheus_client, requests_unixsocket, PIL' 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null
  fi
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check boto3 pytest prometheus_client requests-unixsocket pillow >&2
fi
echo "$venv"
