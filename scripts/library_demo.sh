#!/usr/bin/env bash
# The README's library walk-through, offline: a folder of JPEGs with EXIF, an iPhone HEIC with its
# Live Photo video, an AVIF (refused unless built with --features avif) and a 9 s video made by
# ffmpeg, indexed and searched with the tiny test model (so the rankings are meaningless; every
# step is real).
#
#   scripts/library_demo.sh [DIR]          # default: a fresh temporary directory
#   MODEL=BAAI/AltCLIP scripts/library_demo.sh ~/demo   # the same with the real model
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
DIR="${1:-$(mktemp -d)}"
MODEL="${MODEL:-$ROOT/tests/fixtures/tiny-224}"
ALTCLIP="${ALTCLIP:-$ROOT/target/release/altclip}"
[ -x "$ALTCLIP" ] || cargo build --release -q -p altclip-cli

mkdir -p "$DIR/photos"
cp tests/fixtures/library/*.jpg "$DIR/photos/"
cp tests/fixtures/library/paris_2025.heic "$DIR/photos/IMG_0001.HEIC"
printf 'the Live Photo video' > "$DIR/photos/IMG_0001.MOV"
cp tests/fixtures/images/heif/photo.avif "$DIR/photos/web.avif"
if command -v ffmpeg >/dev/null; then
    # grey for 3 s, red for 3 s, blue for 3 s
    ffmpeg -loglevel error -y -f lavfi -i "color=c=gray:s=160x120:d=3,format=yuv420p" \
        -f lavfi -i "color=c=red:s=160x120:d=3,format=yuv420p" \
        -f lavfi -i "color=c=blue:s=160x120:d=3,format=yuv420p" \
        -filter_complex "[0][1][2]concat=n=3:v=1" "$DIR/photos/clip.mp4"
fi

set -x
"$ALTCLIP" index "$DIR/photos" --model "$MODEL"
"$ALTCLIP" index --errors --db "$DIR/photos/.altclip/index.db"
"$ALTCLIP" search --db "$DIR/photos/.altclip/index.db" "海边的日落" --after 2023 --sort date
"$ALTCLIP" search --db "$DIR/photos/.altclip/index.db" "红色" --kind video
"$ALTCLIP" search --db "$DIR/photos/.altclip/index.db" "巴黎" --camera iphone --json -n 1
