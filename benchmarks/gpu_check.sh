#!/usr/bin/env bash
# Everything this project checks on a lent GPU, as one command that fits one device call
# (about 9 minutes on an H100): the CUDA tests, HiCLIP / vanilla train-step time under bf16 for
# hiclip-tiny, hiclip-small and the paper's ViT-B/32 size, and a recipe sweep on the synthetic
# data (benchmarks/recipe_sweep.py, stopped by a deadline; the sweep folder comes back as a tar).
# Results land in $OUT (or ./gpu_out). Python packages the machine lacks can travel as wheels
# in .whl/ (nltk, defusedxml). Usage on the device machine, from the repository root:
#
#     bash benchmarks/gpu_check.sh
#
# Knobs (environment): SWEEP_GRID, SWEEP_JOBS (14), SWEEP_DEADLINE (s after which no sweep job
# starts, 220), SWEEP_LIMIT (hard stop of the sweep, 360 s), SKIP_TESTS=1, SKIP_BENCH=1.
# A sweep folder carried in .sweep/ (an earlier call's tar, unpacked) is resumed.
#
# CHECK=attention (issue 19) runs instead, in under 10 minutes on one H200 (each part has a
# timeout; the worst case sums to 590 s): the CUDA tests (the fused path's among them), then
# HiCLIP / twin train-step time for hiclip-vit-b-32 at batch 128 and 256 under bf16 with peak
# step memory and our vanilla against transformers' CLIPModel, eager on the fused and on the
# reference path, then compiled (torch.compile, mode default and reduce-overhead = CUDA graphs)
# at batch 128. DRY=1 runs the same python commands on the CPU at hiclip-tiny size, one round,
# without compilation and tests (a check that the script and its arguments work).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
GRID=${SWEEP_GRID:-benchmarks/sweeps/mlm-levers.json}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

if [ "${CHECK:-}" = "attention" ]; then
    if [ -n "${DRY:-}" ]; then
        bench=(--device cpu --threads 2 --models hiclip-tiny hiclip-tiny --batch 4 8 --rounds 1 --warmup 1)
        compiled=()
        eager_limit=600  # a shared CPU, not the GPU budget
    else
        { nvidia-smi -L; python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/machine.txt"
        stamp "CUDA tests"
        timeout 90 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_cuda.py 2>&1 \
            | tail -25 | tee "$OUT/cuda_tests.txt"
        bench=(--device cuda --models hiclip-vit-b-32 hiclip-vit-b-32 --batch 128 256 --rounds 8 --warmup 3)
        compiled=(default reduce-overhead)
        eager_limit=110
    fi
    for path in fused reference; do
        stamp "eager, $path path"
        timeout "$eager_limit" python3 benchmarks/attention_overhead.py "${bench[@]}" --bf16 --skip-micro --no-ablations \
            --attention "$path" 2>&1 | tee "$OUT/overhead_eager_$path.txt"
    done
    for mode in "${compiled[@]}"; do
        stamp "compiled, mode $mode"
        timeout 140 python3 benchmarks/attention_overhead.py --device cuda --models hiclip-vit-b-32 --batch 128 \
            --rounds 8 --warmup 3 --bf16 --skip-micro --compile --compile-mode "$mode" 2>&1 \
            | tee "$OUT/overhead_compiled_$mode.txt"
    done
    stamp "done"
    exit 0
fi

{ nvidia-smi -L; python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"; echo "cpus $(nproc)"; } 2>&1 | tee "$OUT/machine.txt"

python3 -m hiclip.cli data shapes --out /tmp/shapes4k --n 4000 --seed 0 --workers 8 > "$OUT/data.log" 2>&1 &
data_pid=$!

if [ -z "${SKIP_TESTS:-}" ]; then
    stamp "CUDA tests"
    timeout 90 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_cuda.py 2>&1 \
        | tail -25 | tee "$OUT/cuda_tests.txt"
fi
wait $data_pid || { stamp "data generation failed"; tail -5 "$OUT/data.log"; }

if [ -z "${SKIP_BENCH:-}" ]; then
    stamp "attention overhead, bf16"
    timeout 100 python3 benchmarks/attention_overhead.py --device cuda --bf16 --skip-micro \
        --models hiclip-tiny hiclip-small hiclip-vit-b-32 --batch 256 256 128 --rounds 10 --warmup 3 \
        2>&1 | tee "$OUT/attention_overhead.txt"
fi

if [ -z "${SKIP_TESTS:-}" ]; then
    # the two compile tests pay a torch.compile each: run them beside the sweep
    timeout 300 python3 -m pytest -q -p no:cacheprovider -m slow tests/test_cuda.py \
        > "$OUT/cuda_tests_slow.txt" 2>&1 &
fi
stamp "recipe sweep"
mkdir -p /tmp/sweep
if [ -d .sweep ]; then cp -r .sweep/. /tmp/sweep/; fi
timeout "${SWEEP_LIMIT:-360}" python3 benchmarks/recipe_sweep.py --grid "$GRID" --data /tmp/shapes4k \
    --out /tmp/sweep --device cuda --jobs "${SWEEP_JOBS:-14}" --threads 1 \
    --deadline "${SWEEP_DEADLINE:-220}" 2>&1 | tee "$OUT/sweep.txt"
wait
stamp "packing"
cp /tmp/sweep/summary.md "$OUT/" 2>/dev/null
tar czf "$OUT/sweep.tgz" -C /tmp --exclude=final --exclude=checkpoints --exclude='induce-*.jsonl' sweep
stamp "done"
