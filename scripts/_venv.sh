# Sourced by scripts/*: makes (or reuses) the project's virtualenv and installs shiftpeer into it.
VENV=${SHIFTPEER_VENV:-$PWD/.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q ".[test]"
rm -rf build
