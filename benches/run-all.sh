#!/usr/bin/env bash
# Every measurement of BENCHMARKS.md in one run, on a quiet machine (no build, test or other
# benchmark beside it). Needs a release build (`cargo build --release -p liaison-bench`) and
# nats-server (`bash benches/get-nats.sh`). Prints everything to stdout; BENCHMARKS.md quotes it.
#
#   bash benches/run-all.sh 2>&1 | tee bench.log
set -euo pipefail
cd "$(dirname "$0")/.."
bench=./target/release/liaison-bench
nats=benches/.nats/nats-server
runs=${RUNS:-5}

echo "== $(date -u +%FT%TZ) on $(nproc) cores, $(uname -r), commit $(git rev-parse --short HEAD)"
echo "== ceiling"
$bench ceiling

echo "== 1 KiB, 256 outstanding: bus, JetStream (fsync before ack), JetStream (lazy), raw QUIC; $runs sets"
for i in $(seq "$runs"); do
    echo "-- set $i"
    $bench bus --messages 20000 --outstanding 256 --size 1024
    $bench nats --messages 20000 --outstanding 256 --size 1024 --sync always --nats-server "$nats"
    $bench nats --messages 20000 --outstanding 256 --size 1024 --sync lazy --nats-server "$nats"
    $bench quic --messages 20000 --outstanding 256 --size 1024
done

for size in 128 16384; do
    echo "== $size B, 256 outstanding: bus and JetStream (fsync before ack); $runs sets"
    for i in $(seq "$runs"); do
        echo "-- set $i"
        $bench bus --messages 20000 --outstanding 256 --size "$size"
        $bench nats --messages 20000 --outstanding 256 --size "$size" --sync always --nats-server "$nats"
    done
done

echo "== open loop at half the closed-loop rate (RATE, msg/s); $runs runs"
rate=${RATE:-2400}
for i in $(seq "$runs"); do
    $bench bus-open --rate "$rate" --seconds 5 --size 1024
done

echo "== officers: request and answer; $runs runs"
for i in $(seq "$runs"); do
    $bench officers --requests 500 --rates 100,500,1000,2000 --seconds 3
done

echo "== backlog of 500,000"
for i in $(seq "${BACKLOG_RUNS:-3}"); do
    $bench backlog --messages 500000 --size 1024
done

echo "== audit log of 1,000,000 entries"
for i in $(seq "${AUDIT_RUNS:-3}"); do
    $bench audit --entries 1000000
done

echo "== syscalls of the bus (strace; not a timed run)"
strace -f --seccomp-bpf -c -e trace=fsync,fdatasync,sync_file_range,pwrite64,write,sendmsg,sendmmsg,recvmsg,recvmmsg,futex \
    $bench bus --messages 20000 --outstanding 256 --size 1024 2>&1 | tail -20

echo "== ceiling again"
$bench ceiling
echo "== done $(date -u +%FT%TZ)"
