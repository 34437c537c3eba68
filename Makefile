# Shortcuts; the scripts are what the README and CI call.
.PHONY: demo test bench bench-compare lint
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh -q
bench:  # one benchmark: `make bench BENCH=serving` runs benchmarks/bench_serving.py
	@test -n "$(BENCH)" || { echo "usage: make bench BENCH=<name>, one of:" $$(ls benchmarks/bench_*.py | sed 's|.*/bench_||; s|\.py||'); exit 2; }
	bash scripts/bootstrap.sh && OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_$(BENCH)
bench-compare:  # new results in benchmarks/results/ vs the committed ones; `make bench-compare BENCH=serving`
	.venv/bin/python -m benchmarks.compare $(BENCH)
