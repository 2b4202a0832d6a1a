# SPDX-License-Identifier: MIT
"""DashAttention (two-stage sparse attention with alpha-entmax block selection)
through libdashattn.

    import dashattn
    out, lse = dashattn.attention(q, k, v)          # numpy, CPU backend
    from dashattn.torch import dash_attention         # torch tensors, autograd

Importing dashattn loads libdashattn (see dashattn._find for where it looks)
and raises LibraryNotFound, an ImportError, naming every place it tried.
torch is imported only by dashattn.torch.
"""

from . import _capi
from ._capi import DashattnError, VersionMismatch
from ._core import context, library
from ._find import LibraryNotFound
from ._numpy import attention, attention_backward

__version__ = "0.2.0"

library()


def library_version():
    """The version string of the libdashattn actually loaded."""
    return library().version()


def library_path():
    return library().path


def backends_report():
    """dashattn_backends_report(): which backends load here, and why others do not."""
    return library().backends_report()


__all__ = ["attention", "attention_backward", "DashattnError", "LibraryNotFound",
           "VersionMismatch", "context", "library", "library_version", "library_path",
           "backends_report", "_capi"]
