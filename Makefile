# Shortcuts; the scripts are what the README and CI call.
.PHONY: demo test bench bench-compare lint
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh -q
bench:
	bash scripts/bootstrap.sh && OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks
bench-compare:  # new results in benchmarks/results/ vs the committed ones; `make bench-compare BENCH=serving`
	.venv/bin/python -m benchmarks.compare $(BENCH)
