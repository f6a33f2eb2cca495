#!/bin/sh
# A 3-node NATS JetStream cluster on this machine, for trying probetag's
# scale-out (docs/scale-out.md, "On one machine"). Loopback only.
#
#   configs/nats/local/start.sh            # start the three nodes, wait until JetStream is up
#   configs/nats/local/start.sh status     # which nodes run
#   configs/nats/local/start.sh stop       # stop them (SIGTERM, by their pid files)
#
# Clients: nats://127.0.0.1:4222, :4223, :4224 (configs/nats/local/cluster.yaml).
# Stores, logs and pid files: $PROBETAG_NATS_DIR (default /tmp/probetag-nats).
# Remove that directory to start from empty streams.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${PROBETAG_NATS_DIR:-/tmp/probetag-nats}
server=${NATS_SERVER:-nats-server}

running() { [ -f "$dir/node-$1.pid" ] && kill -0 "$(cat "$dir/node-$1.pid")" 2>/dev/null; }

case "${1:-start}" in
start)
  if ! command -v "$server" >/dev/null 2>&1; then
    echo "nats-server not found: apt-get install nats-server (Debian/Ubuntu), or a release from" \
         "https://github.com/nats-io/nats-server/releases (>= 2.10 for production)" >&2
    exit 1
  fi
  mkdir -p "$dir"
  for i in 1 2 3; do
    if running "$i"; then echo "node $i already runs (pid $(cat "$dir/node-$i.pid"))"; continue; fi
    mkdir -p "$dir/node-$i"
    nohup "$server" -c "$here/node-$i.conf" -sd "$dir/node-$i" -l "$dir/node-$i.log" \
      -P "$dir/node-$i.pid" >/dev/null 2>&1 &
  done
  # /healthz answers ok once the node's JetStream has joined the cluster.
  for i in 1 2 3; do
    n=0
    until curl -fsS "http://127.0.0.1:$((8221 + i))/healthz" >/dev/null 2>&1; do
      n=$((n + 1))
      if [ "$n" -ge 150 ]; then echo "node $i is not up after 30 s; see $dir/node-$i.log" >&2; exit 1; fi
      sleep 0.2
    done
  done
  echo "3 NATS nodes up: nats://127.0.0.1:4222,4223,4224 (state in $dir)"
  ;;
status)
  for i in 1 2 3; do
    if running "$i"; then echo "node $i: running (pid $(cat "$dir/node-$i.pid"))"; else echo "node $i: stopped"; fi
  done
  ;;
stop)
  for i in 1 2 3; do
    if running "$i"; then kill "$(cat "$dir/node-$i.pid")"; echo "node $i: stopping"; fi
  done
  # JetStream flushes its stores on the way out: wait for it (15 s at most).
  for i in 1 2 3; do
    n=0
    while running "$i" && [ "$n" -lt 75 ]; do n=$((n + 1)); sleep 0.2; done
    if running "$i"; then echo "node $i still running after 15 s (pid $(cat "$dir/node-$i.pid"))" >&2; fi
  done
  ;;
*)
  echo "usage: $0 [start|status|stop]" >&2
  exit 2
  ;;
esac
