#!/usr/bin/env bash
# Builds the binaries and images and starts the 3-node cluster and the
# calc example of docker-compose.yml in the background. Extra arguments
# go to "compose up" (e.g. --wait is not needed: see README.md).
#
#   deploy/up.sh                 # start (or update) the deployment
#   deploy/compose.sh ps         # what runs
#   deploy/compose.sh down -v    # stop and remove everything
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh
exec deploy/compose.sh up -d --build "$@"
