# SPDX-License-Identifier: MIT
"""The benchmark scripts' name for dashattn's ctypes binding.

The binding lives in python/dashattn/_capi.py, the package's own; gpu_bench.py
and released_compare.py import it as dashattn_ctypes from a source tree or a
release tarball, where the package is not installed, so this puts the tree's
python/ first on the path. _capi is loaded directly, not through
dashattn/__init__, which would look for a library at import time, while the
scripts take the library's path from --lib.
"""

import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_capi_path = os.path.join(_here, os.pardir, "python", "dashattn", "_capi.py")
_spec = importlib.util.spec_from_file_location("dashattn_ctypes_capi", _capi_path)
_capi = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _capi
_spec.loader.exec_module(_capi)

globals().update({k: v for k, v in vars(_capi).items() if not k.startswith("__")})
