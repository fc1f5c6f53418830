#!/usr/bin/env bash
# The client libraries the server's tests talk to it with, from PyPI, in a venv:
# OpenAI's official Python client, and Selenium (with Debian's chromium and
# chromium-driver) for the chat page in a real browser. Idempotent.
#
#     tools/setup_clients.sh [VENV]     # default $VOCOLLAMA_CLIENTS_VENV or /var/tmp/vocollama-clients
set -euo pipefail
venv="${1:-${VOCOLLAMA_CLIENTS_VENV:-/var/tmp/vocollama-clients}}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import openai, selenium" 2>/dev/null; then
    echo "clients: $venv is ready"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q --no-cache-dir openai==3.57.0 selenium==4.51.0
"$venv/bin/python" -c "import openai, selenium; print('clients: openai', openai.__version__, 'selenium', selenium.__version__, 'in $venv')"
