#!/usr/bin/env bash
# Set up the environment (if needed) and answer questions about the example files the package
# ships (an image, a document page, a video with sound, an audio clip) with the bundled model,
# printing each answer next to the expected one (the bundled model is partly trained: see README).
# Without the bundled weights (e.g. removed to retrain), it runs the same pipeline with an untrained
# model of the same architecture and says so: its answers are then random text.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/env.sh test
set -euo pipefail
if python -c "import omni, sys; sys.exit(0 if __import__('os').path.isdir(omni.BUNDLED_MODEL) else 1)" 2>/dev/null; then
  python -m omni.examples "$@"
else
  echo "The bundled model is not in omni/bundled/small (train it with scripts/train_bundled.sh)."
  python -m omni.examples --untrained "$@"
fi
