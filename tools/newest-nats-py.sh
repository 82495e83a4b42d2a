#!/usr/bin/env bash
# Run jetkit's suite against the newest nats-py on the package index, whatever
# pyproject.toml allows: a new release is tried here before users get it.
#   tools/newest-nats-py.sh [pytest arguments]   (default: the unit and integration layers
#                                                 without the slow tests)
# It makes its own virtual environment (.venv-newest-nats-py), installs jetkit with its
# test tools, then the newest nats-py over the pinned one (--no-deps: only nats-py moves).
# jetkit's own check (src/jetkit/_natspy.py) refuses a nats-py whose insides moved, at the
# first Stream.open, naming what is missing: that is the first thing to read if it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-newest-nats-py
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q -e ".[test]"
pip install -q --upgrade --pre --no-deps nats-py
echo "nats-py $(python -c 'import importlib.metadata as m; print(m.version("nats-py"))') (pinned: $(python -c 'from jetkit._natspy import SUPPORTED; print(SUPPORTED)'))"
if [ "$#" -eq 0 ]; then
    set -- tests/unit tests/integration -m "not slow" -q
fi
pytest -p no:cacheprovider "$@"
