#!/usr/bin/env bash
# Makes the secrets of the secured compose deployment
# (docker-compose.secure.yml) in $PEERBUS_SECRETS (default dist/secrets),
# unless they are there already: an identity (peerbus keygen) per node, for calc, for an
# operator (ops, role admin) and for an application client (app, role
# peer: calls multiply, emits and reads compose.*); the policy naming
# them (policy.yaml); and the route password (routes.env). Nothing here
# is committed: delete the directory to make new ones.
#
# The containers run as user 65534: as root this script gives the files
# to that user (mode 0400); otherwise it makes them readable by all and
# says so.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PEERBUS_SECRETS:-dist/secrets}
bin=${PEERBUS_BIN:-dist/compose/peerbus}
if [[ -f $dir/policy.yaml ]]; then
  echo "secrets in $dir (kept)"
  exit 0
fi
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
key() { "$bin" keygen "$dir.tmp/$1.nk" | sed -n 's/^public: //p'; }
n1=$(key node1) n2=$(key node2) n3=$(key node3)
ops=$(key ops) calc=$(key calc) app=$(key app) mallory=$(key mallory)
cat >"$dir.tmp/policy.yaml" <<POLICY
# The policy of the secured compose deployment (made by deploy/secrets.sh).
users:
  # The nodes' own peers (and their healthchecks) and the operator.
  - {name: node1, key: $n1, role: admin}
  - {name: node2, key: $n2, role: admin}
  - {name: node3, key: $n3, role: admin}
  - {name: ops, key: $ops, role: admin}
  # calc serves multiply in group math, and nothing else.
  - {name: calc, key: $calc, role: peer, group: math, serve: [multiply]}
  # An application: calls multiply, emits and reads compose.* events.
  - {name: app, key: $app, role: peer, call: [multiply], emit: [compose.*], read: [compose.>]}
  # An identity granted one call only (the compose test's attacker).
  - {name: mallory, key: $mallory, role: peer, call: [multiply]}
POLICY
printf 'PEERBUS_CLUSTER_USER=route\nPEERBUS_CLUSTER_PASSWORD=%s\n' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir.tmp/routes.env"
if [[ $(id -u) == 0 ]]; then
  chown -R 65534:65534 "$dir.tmp"
  chmod 0400 "$dir.tmp"/*
  chmod 0500 "$dir.tmp"
else
  chmod a+r "$dir.tmp"/*
  echo "warning: not root: the secrets in $dir are readable by every user of this machine (the containers run as user 65534)" >&2
fi
mv "$dir.tmp" "$dir"
echo "secrets made in $dir"
