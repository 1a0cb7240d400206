#!/usr/bin/env bash
# Create a venv for another pyenv interpreter, install the project with its test extras, run the
# wcfrelay tests there. Spyne 2.14 needs wcfrelay.compat on 3.12+ (and legacy-cgi on 3.13).
#
#   .ci/py313-setup.sh                # 3.13.0 into /tmp/venv313
#   .ci/py313-setup.sh 3.12.1 /tmp/venv312
set -euo pipefail

version="${1:-3.13.0}"
venv="${2:-/tmp/venv$(echo "$version" | cut -d. -f1,2 | tr -d .)}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYENV_ROOT:-$HOME/.pyenv}/versions/$version/bin/python"

if [[ ! -x "$python" ]]; then
    echo "no interpreter at $python (pyenv install $version?)" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[test]"
cd "$root"
"$venv/bin/python" -m pytest tests/wcfrelay -q "${@:3}"
