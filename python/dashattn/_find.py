# SPDX-License-Identifier: MIT
"""Where libdashattn is: the order of places tried, and an error naming them all."""

import ctypes.util
import os
import shutil
import subprocess

from . import _capi


class LibraryNotFound(ImportError):
    """No usable libdashattn; the message lists every place tried and why it failed."""


HOW_TO_POINT = (
    "Point dashattn at the library with DASHATTN_LIBRARY=/path/to/libdashattn.so.1, "
    "or DASHATTN_BUILD_DIR=/path/to/build-tree (the directory holding .libs/), or install "
    "it (make install) where pkg-config or the dynamic loader finds it.")


def _pkg_config_libdir():
    exe = shutil.which("pkg-config")
    if exe is None:
        return None, "pkg-config: not installed"
    try:
        r = subprocess.run([exe, "--variable=libdir", "dashattn"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"pkg-config --variable=libdir dashattn: {e}"
    if r.returncode != 0 or not r.stdout.strip():
        why = r.stderr.strip().splitlines()[0] if r.stderr.strip() else "no dashattn.pc"
        return None, f"pkg-config --variable=libdir dashattn: {why}"
    return r.stdout.strip(), None


def candidates():
    """(description, path or None, reason when None) in the order tried."""
    env_lib = os.environ.get("DASHATTN_LIBRARY")
    if env_lib:
        # An explicit choice is the only one tried: falling back elsewhere
        # would hide a typo behind some other, older library.
        yield "DASHATTN_LIBRARY", env_lib, None
        return
    build = os.environ.get("DASHATTN_BUILD_DIR")
    if build:
        yield "DASHATTN_BUILD_DIR", os.path.join(build, ".libs", _capi.SONAME), None
        return
    libdir, why = _pkg_config_libdir()
    if libdir:
        yield "pkg-config", os.path.join(libdir, _capi.SONAME), None
    else:
        yield "pkg-config", None, why
    found = ctypes.util.find_library("dashattn")
    if found:
        yield "ctypes.util.find_library('dashattn')", found, None
    else:
        yield "ctypes.util.find_library('dashattn')", None, "not found"
    # find_library may miss a library the loader still finds (LD_LIBRARY_PATH
    # on systems without ldconfig's cache entry), so the soname is tried too.
    yield "the dynamic loader", _capi.SONAME, None


def load_library():
    tried = []
    for how, path, why in candidates():
        if path is None:
            tried.append(f"  {how}: {why}")
            continue
        try:
            return _capi.Library(path)
        except _capi.VersionMismatch as e:
            tried.append(f"  {how}: {e}")
        except (OSError, FileNotFoundError) as e:
            tried.append(f"  {how}: {path}: {e}")
    raise LibraryNotFound("dashattn could not load libdashattn. Tried:\n" + "\n".join(tried)
                          + "\n" + HOW_TO_POINT)
