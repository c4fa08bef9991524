PYTHON ?= python3
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install test bench nightly

# torch first, pinned to the CPU wheel, so the package's torch range never pulls CUDA builds. Beside pip, Debian's
# chromium for the demo's browser test (.ci/install-browser: nothing to do when it is there; apt, with sudo when not
# root); without it that test fails and says so, the install does not. panopticapi-lite (the reference PQ) goes in
# without its dependencies: its metadata pins numpy<2, which it does not need.
install:
	@mkdir -p build
	@bash .ci/install-browser > build/install-browser.log 2>&1 & browser=$$!; \
	$(PYTHON) -m pip install -q torch==2.13.0 && $(PYTHON) -m pip install -q -e ".[test]" && \
	$(PYTHON) -m pip install -q --no-deps "panopticapi-lite>=0.2"; installed=$$?; \
	wait $$browser || echo "chromium was not installed (the demo's browser test will fail): build/install-browser.log"; \
	exit $$installed

CI_RECIPE_OUT := build/ci-recipe
# The CI recipe's last stage and the one before it (tests/synthetic/test_ci_recipe.py checks them against ci.yaml).
CI_RECIPE_SPLIT := s3_text
CI_RECIPE_LAST := s3

# The CI training recipe runs its first stages in the background beside the test suite, each on one thread (two
# multi-threaded torch processes on two cores stall each other); once both are done, its last stage (most of its
# time) trains on every core, then the trained and the blind model are scored in two processes side by side; its
# checks run last.
test: install
	@rm -rf $(CI_RECIPE_OUT) && mkdir -p $(CI_RECIPE_OUT)
	@OMP_NUM_THREADS=1 $(PYTHON) -m xsam_hf.synthetic.train_default --recipe ci --output $(CI_RECIPE_OUT) \
		--until-stage $(CI_RECIPE_SPLIT) --no-eval > $(CI_RECIPE_OUT).log 2>&1 & recipe=$$!; \
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q --durations=15; suite=$$?; \
	echo "waiting for the CI recipe (log: $(CI_RECIPE_OUT).log)"; wait $$recipe; trained=$$?; \
	if [ $$trained -eq 0 ]; then \
		$(PYTHON) -m xsam_hf.synthetic.train_default --recipe ci --output $(CI_RECIPE_OUT) \
			--from-stage $(CI_RECIPE_LAST) --models trained,blind --eval-jobs 2 >> $(CI_RECIPE_OUT).log 2>&1; \
		trained=$$?; \
	fi; \
	tail -n 25 $(CI_RECIPE_OUT).log; \
	if [ $$trained -ne 0 ]; then echo "CI recipe failed (exit $$trained)"; exit 1; fi; \
	$(PYTHON) -m pytest -q -m ci_recipe tests/synthetic/test_ci_recipe.py --ci-recipe-output $(CI_RECIPE_OUT) \
		|| exit 1; \
	exit $$suite

bench: install
	$(PYTHON) -m pytest -q -m slow --durations=15
	$(PYTHON) bench/bench_forward.py

nightly: bench
