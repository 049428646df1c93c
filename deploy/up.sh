#!/usr/bin/env bash
# Builds the binaries and images and starts the 3-node cluster and the
# calc example of docker-compose.yml in the background. With --secure
# first, it starts the secured variant (docker-compose.secure.yml: a
# policy, identities and route credentials, made in dist/secrets by
# deploy/secrets.sh). Extra arguments go to "compose up" (e.g. --wait is
# not needed: see README.md).
#
#   deploy/up.sh                 # start (or update) the deployment
#   deploy/up.sh --secure        # the secured variant
#   deploy/compose.sh ps         # what runs
#   deploy/compose.sh down -v    # stop and remove everything
set -euo pipefail
cd "$(dirname "$0")/.."
files=()
if [[ ${1:-} == --secure ]]; then
  shift
  files=(-f docker-compose.yml -f docker-compose.secure.yml)
fi
deploy/build.sh
if ((${#files[@]})); then
  deploy/secrets.sh
fi
exec deploy/compose.sh "${files[@]}" up -d --build "$@"
