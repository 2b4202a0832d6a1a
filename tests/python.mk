# SPDX-License-Identifier: MIT
# The Python package: shipped in the tarball (pip install ./python from a
# release), tested against the build tree's library, never installed by make.
TESTS += tests/test_python.sh
dist_noinst_SCRIPTS += tests/test_python.sh
EXTRA_DIST += \
	python/pyproject.toml \
	python/README.md \
	python/dashattn/__init__.py \
	python/dashattn/_capi.py \
	python/dashattn/_core.py \
	python/dashattn/_find.py \
	python/dashattn/_numpy.py \
	python/dashattn/torch.py \
	python/tests/reference.py \
	python/tests/test_numpy_api.py \
	python/tests/test_torch_api.py
