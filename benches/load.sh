#!/usr/bin/env bash
# The load benchmark: the gateway against a bare pingora passthrough, in one run (BENCHMARKS.md).
# Builds release binaries, starts an upstream, the bare proxy, the gateway on the embedded store,
# a redis-server and two gateway replicas on it (all on 127.0.0.1, free ports), and prints the
# table. Every load run is bounded in time; the whole run takes about 10 minutes.
#
#   benches/load.sh                    # full: 5 interleaved rounds, medians
#   benches/load.sh --short            # a few seconds per target (what CI runs, on debug builds)
#   benches/load.sh --rounds 3 --secs 5 --latency-secs 10 --trials 50 --threads 1
#   benches/load.sh --no-pin           # unpinned (default: the measured proxy alone on the last CPU, the rest on the others)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/need-packages cmake:cmake redis-server:redis-server wrk:wrk
scripts/need-oha
exec cargo bench --bench load -- "$@"
