#!/usr/bin/env bash
# llama.cpp for `vocollama bench --model DIR --llamacpp`, set up reproducibly
# from the package registries: a Python venv with llama-cpp-python (a source
# package: pip compiles llama.cpp with this CPU's own instructions, a few
# minutes on two cores) and gguf (writes the GGUF files). Idempotent.
#
#     tools/setup_llamacpp.sh [VENV]     # default $VOCOLLAMA_LLAMACPP_VENV or /var/tmp/vocollama-llamacpp
#
# Then: vocollama bench --model DIR --llamacpp --llamacpp-python VENV/bin/python
set -euo pipefail
venv="${1:-${VOCOLLAMA_LLAMACPP_VENV:-/var/tmp/vocollama-llamacpp}}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llama_cpp, gguf, numpy" 2>/dev/null; then
    echo "llama.cpp: $venv is ready"
    exit 0
fi
command -v g++ >/dev/null || {
    echo "setup_llamacpp: a C++ compiler is needed (Debian: apt-get install build-essential)" >&2
    exit 1
}
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# This CPU's instructions, but not AMX: llama-cpp-python 0.3.36's AMX matmul (Q8_0, Q4_0)
# dies of SIGILL at its first tile load on a worker thread where the CPU has AMX.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install -q --no-cache-dir llama-cpp-python==0.3.36 gguf==0.19.0 numpy
"$venv/bin/python" -c "import llama_cpp, gguf; print('llama.cpp: llama-cpp-python', llama_cpp.__version__, 'in $venv')"
