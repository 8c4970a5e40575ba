#!/usr/bin/env bash
# Throughput and latency of `altclip serve` on loopback, with cross-request
# batching (--max-batch-size 32) and without (--max-batch-size 1).
#
#   cargo build --release -p altclip-cli -p altclip-server --example load
#   scripts/bench_serve.sh MODEL [TEXT_REQUESTS] [IMAGE_REQUESTS] [CONCURRENCY]
#
# Each request embeds one input (a short text, or tests/fixtures/images/photo.jpg).
# Prints one JSON line per run (see crates/altclip-server/examples/load.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: scripts/bench_serve.sh MODEL [TEXT_REQUESTS] [IMAGE_REQUESTS] [CONCURRENCY]}
text_requests=${2:-2000}
image_requests=${3:-500}
concurrency=${4:-32}
port=${ALTCLIP_BENCH_PORT:-18931}
url="http://127.0.0.1:$port"
for batch in 32 1; do
    target/release/altclip serve --model "$model" --port "$port" \
        --max-batch-size "$batch" --max-concurrent-requests 1024 2>/dev/null &
    server=$!
    trap 'kill $server 2>/dev/null' EXIT
    until curl -sf "$url/health" >/dev/null; do
        kill -0 $server 2>/dev/null || { echo "the server exited" >&2; exit 1; }
        sleep 0.5
    done
    # Warm up both towers, then measure.
    target/release/examples/load --url "$url" --kind text --requests 20 --concurrency 4 >/dev/null
    target/release/examples/load --url "$url" --kind image --requests 8 --concurrency 4 >/dev/null
    for kind in text image; do
        n=$text_requests
        [ "$kind" = image ] && n=$image_requests
        printf '{"max_batch_size":%s,"result":' "$batch"
        target/release/examples/load --url "$url" --kind "$kind" --requests "$n" --concurrency "$concurrency" | tr -d '\n'
        echo '}'
    done
    kill $server
    wait $server 2>/dev/null || true
    trap - EXIT
done
