#!/usr/bin/env bash
# Runs "docker compose" (the plugin) or "docker-compose" (the standalone
# tool), whichever this machine has, with the given arguments.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
fi
echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
exit 127
