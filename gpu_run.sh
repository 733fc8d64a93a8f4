if [ ! -f /tmp/site/.done ]; then
cat ~/.mlx-cuda-parts/part0 .mlx-cuda/b/part1 > /tmp/$(cat .mlx-cuda/b/NAME)
python3 -m pip install -q --no-deps ~/.mlx-cuda-parts/mlx-*.whl /tmp/$(cat .mlx-cuda/b/NAME) 2>&1 | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$(ls -d packages/*/src | tr '\n' ':') PYTHONUNBUFFERED=1
timeout 120 python3 tools/bench/decode_step.py --skip-micro --models small,medium --lags 0,2,8,32 --json $OUT/lags.json 2>&1 | grep "steps/s"
timeout 330 python3 tools/bench/musicgen.py --device gpu --variants large --torch-dtype float16 --runs 2 --frames 500 --json $OUT/musicgen_large.json > $OUT/bench.txt 2>&1
echo "bench rc $?"; tail -12 $OUT/bench.txt
