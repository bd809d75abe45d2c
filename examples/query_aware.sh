#!/usr/bin/env bash
# Every query-aware method and sampler once, with a dual encoder whose right answer is known by construction
# (tests/fixtures/constructed_siglip: a frame embeds as its colour, the words red/green/blue as those colours) on the
# committed tiny checkpoints, printing the part of each record that shows what the question changed. The README's
# "Query-aware runs" section is this script's output. Usage: examples/query_aware.sh [tokensieve binary] [out dir].
set -euo pipefail
BIN=${1:-target/release/tokensieve}
OUT=${2:-target/query-aware}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIGLIP="siglip:$ROOT/tests/fixtures/constructed_siglip"
FIX="$ROOT/models/tests/fixtures"
mkdir -p "$OUT"
# 40 frames at 10 fps: 0-14 blue, 15-19 red, 20-39 green (lossless), and a 64 x 64 picture, top-left quadrant red.
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "color=blue:s=32x32:r=10:d=1.5,format=rgb24" \
    -f lavfi -i "color=red:s=32x32:r=10:d=0.5,format=rgb24" -f lavfi -i "color=0x00ff00:s=32x32:r=10:d=2,format=rgb24" \
    -filter_complex "[0][1][2]concat=n=3:v=1" -c:v ffv1 "$OUT/colours.mkv"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "color=blue:s=64x64:d=1,format=rgb24" \
    -vf "drawbox=x=0:y=0:w=32:h=32:color=red:t=fill" -frames:v 1 "$OUT/quadrant.png"
show() { python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps($1))"; }

echo '$ tokensieve sample colours.mkv --sampler f2c --relevance siglip:constructed_siglip --query "what is the red car ?" --candidates 40 --anchors 1 --budget 144 --json'
"$BIN" sample "$OUT/colours.mkv" --sampler f2c --relevance "$SIGLIP" --query "what is the red car ?" \
    --candidates 40 --anchors 1 --budget 144 --device cpu --json \
    | show '{"frames": [f["index"] for f in r["frames"]], "anchors": r["details"]["anchors"], "clip_len": r["details"]["clip_len"], "scores 13-21": [round(s["score"], 3) for s in r["details"]["scores"][13:22]]}'

echo '$ tokensieve sample colours.mkv --sampler dcode --relevance siglip:constructed_siglip --frames 4 --candidates 40 --uniform-ratio 0.5 --json'
"$BIN" sample "$OUT/colours.mkv" --sampler dcode --relevance "$SIGLIP" --frames 4 --candidates 40 --uniform-ratio 0.5 \
    --device cpu --json | show '{"frames": [f["index"] for f in r["frames"]], "embedder": r["details"]["embedder"].split("/")[-1]}'

ask() {
    "$BIN" ask --device cpu --max-new-tokens 1 --relevance "$SIGLIP" --json "$@"
}
echo '$ tokensieve ask --model tiny_onevision --video colours.mkv --sampler f2c:candidates=40,anchors=1,budget=16 --relevance siglip:constructed_siglip --pruner todre --keep 8 --json "what is the red car ?"'
ask --model "$FIX/tiny_onevision" --video "$OUT/colours.mkv" --sampler f2c:candidates=40,anchors=1,budget=16 \
    --pruner todre --keep 8 "what is the red car ?" \
    | show '{"frame_indices": r["record"]["frame_indices"], "anchors": r["record"]["sampler_note"]["anchors"], "visual_tokens": r["record"]["visual_tokens"]}'
for pruner in query:recovery=off cdpruner cdpruner:sign=1 mmr:importance=relevance; do
    echo "\$ tokensieve ask --model tiny_llava --image quadrant.png --pruner $pruner --keep 4 --relevance siglip:constructed_siglip --json \"what is the red car ?\""
    ask --model "$FIX/tiny_llava" --image "$OUT/quadrant.png" --pruner "$pruner" --keep 4 "what is the red car ?" \
        | show '{"kept": r["record"]["kept"], "notes": [n.replace("'"$ROOT"'/tests/fixtures/", "") for n in r["record"]["notes"]]}'
done
echo "(tiny_llava's 4 x 4 token grid: the red quadrant is tokens 0, 1, 4, 5)"
