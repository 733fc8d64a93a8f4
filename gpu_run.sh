if [ ! -f /tmp/site/.done ]; then
cat ~/.mlx-cuda-parts/part0 .mlx-cuda/b/part1 > /tmp/$(cat .mlx-cuda/b/NAME)
python3 -m pip install -q --no-deps ~/.mlx-cuda-parts/mlx-*.whl /tmp/$(cat .mlx-cuda/b/NAME) 2>&1 | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$(ls -d packages/*/src | tr '\n' ':') PYTHONUNBUFFERED=1
timeout 280 python3 -m pytest tests/musicgen/test_cuda_step.py -q -p no:cacheprovider --tb=short -rfE > $OUT/pytest.txt 2>&1
echo "pytest rc $?"; grep -E "passed|failed|error" $OUT/pytest.txt | tail -3; grep -E "^(FAILED|ERROR)|Error|assert" $OUT/pytest.txt | head -30
timeout 300 python3 tools/bench/musicgen.py --device gpu --variants small,medium,large --torch-dtype float16 --runs 2 --frames 500 --json $OUT/musicgen.json > $OUT/bench.txt 2>&1
echo "bench rc $?"; tail -25 $OUT/bench.txt
