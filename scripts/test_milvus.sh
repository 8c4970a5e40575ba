#!/usr/bin/env bash
# Runs the altclip-milvus integration test against a throwaway milvus-lite
# server on a free loopback port.
#
#   scripts/test_milvus.sh            # venv in ${MILVUS_VENV:-/tmp/milvus-venv}
#
# Exits 0 with a "skipped:" line when milvus-lite cannot be installed (no
# PyPI access, no python3 venv); otherwise exits with the test's status.
set -uo pipefail

cd "$(dirname "$0")/.."

VENV="${MILVUS_VENV:-/tmp/milvus-venv}"
PYTHON="${PYTHON:-python3}"
# milvus-lite imports pymilvus without declaring it, so pin both.
PACKAGES=(milvus-lite==3.2.2 pymilvus==3.0.2)

skip() {
    echo "skipped: cannot install milvus-lite: $*"
    exit 0
}

if [ ! -x "$VENV/bin/milvus-lite" ] || ! "$VENV/bin/python" -c 'import milvus_lite, pymilvus' 2>/dev/null; then
    log="$(mktemp)"
    if ! { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } >"$log" 2>&1; then
        skip "cannot create a venv at $VENV: $(tail -n 1 "$log")"
    fi
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >"$log" 2>&1; then
        skip "pip install ${PACKAGES[*]} failed: $(grep -m1 -i error "$log" || tail -n 1 "$log")"
    fi
    rm -f "$log"
fi

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATA_DIR="$(mktemp -d)"
LOG="$DATA_DIR.log"
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # milvus-lite ignores SIGINT in the background; SIGTERM stops it.
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA_DIR" "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$VENV/bin/milvus-lite" server --data-dir "$DATA_DIR" --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "milvus-lite exited before opening port $PORT:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "milvus-lite did not open 127.0.0.1:$PORT within 30 s:" >&2
    cat "$LOG" >&2
    exit 1
fi
echo "milvus-lite $("$VENV/bin/python" -c 'import milvus_lite; print(milvus_lite.__version__)' 2>/dev/null) listening on 127.0.0.1:$PORT (pid $SERVER_PID)"

export ALTCLIP_TEST_MILVUS_URI="http://127.0.0.1:$PORT"
cargo test -p altclip-milvus --test milvus -- --nocapture &&
    cargo test -p altclip-cli --test library milvus -- --nocapture
status=$?
if [ "$status" -ne 0 ]; then
    echo "--- milvus-lite log ---" >&2
    tail -n 50 "$LOG" >&2
fi
exit "$status"
