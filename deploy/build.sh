#!/usr/bin/env bash
# Builds the static binaries of the compose deployment into dist/compose,
# the Docker build context of deploy/Dockerfile. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/compose
rm -rf "$out"
mkdir -p "$out/data"
export CGO_ENABLED=0
go build -trimpath -ldflags='-s -w' -o "$out/peerbus" ./cmd/peerbus
go build -trimpath -ldflags='-s -w' -o "$out/calc" ./examples/calc
cp deploy/Dockerfile "$out/Dockerfile"
echo "built $out"
