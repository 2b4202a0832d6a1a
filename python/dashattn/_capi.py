# SPDX-License-Identifier: MIT
"""ctypes binding of libdashattn (include/dashattn.h): the layer under dashattn's
numpy and torch APIs, and what the benchmark scripts (bench/dashattn_ctypes.py) use.

Mirrors the public header field by field: C enums are C ints, int32_t and
int64_t fields keep their widths, and pointers into the context's memory space
(device pointers for CUDA, cl_mem handles for OpenCL) are opaque c_void_p
values on which this module never does arithmetic. Every call that returns a
dashattn_status is checked; a failure raises DashattnError carrying
dashattn_last_error().
"""

import ctypes as C
import os

# The header this module mirrors (DASHATTN_VERSION_* in include/dashattn.h).
# dashattn_problem took its present layout in 0.2, and the layout of a
# struct only changes with the soname, so any 0.x library from 0.2 on that
# is libdashattn.so.1 lays its structs out as below.
HEADER_VERSION = (0, 2, 0)
SONAME = "libdashattn.so.1"

# enum dashattn_status
OK = 0
STATUS_NAMES = {
    0: "OK",
    1: "INVALID_ARGUMENT",
    2: "SHAPE_MISMATCH",
    3: "UNSUPPORTED",
    4: "OUT_OF_MEMORY",
    5: "BACKEND_UNAVAILABLE",
    6: "ABI_MISMATCH",
    7: "DEVICE",
    8: "WORKSPACE_TOO_SMALL",
    9: "CACHE_FULL",
    10: "INTERNAL",
}
ERR_UNSUPPORTED = 3

# enum dashattn_dtype
F32, F16, BF16 = 0, 1, 2
DTYPE_BY_NAME = {"f32": F32, "f16": F16, "bf16": BF16}
DTYPE_SIZE = {F32: 4, F16: 2, BF16: 2}

# enum dashattn_selection_mode, dashattn_group_mode
SELECT_ENTMAX, SELECT_TOPK = 0, 1
GROUP_PER_HEAD, GROUP_SHARED, GROUP_MEAN = 0, 1, 2
PRIOR_LOG, PRIOR_FLAT = 0, 1
SCHEDULE_EXACT, SCHEDULE_HALLEY = 0, 1

# enum dashattn_operation
OP_FORWARD, OP_BACKWARD, OP_DECODE = 0, 1, 2

# enum dashattn_cache_layout
CACHE_CONTIGUOUS, CACHE_PAGED = 0, 1


class Tensor(C.Structure):
    _fields_ = [
        ("data", C.c_void_p),
        ("dtype", C.c_int),
        ("shape", C.c_int64 * 4),
        ("strides", C.c_int64 * 4),
    ]


class ContextOptions(C.Structure):
    _fields_ = [
        ("backend", C.c_char_p),
        ("device", C.c_int),
        ("num_threads", C.c_int),
    ]


class Problem(C.Structure):
    _fields_ = [
        ("batch", C.c_int64),
        ("heads_q", C.c_int64),
        ("heads_kv", C.c_int64),
        ("len_q", C.c_int64),
        ("len_k", C.c_int64),
        ("head_dim", C.c_int64),
        ("dtype", C.c_int),
        ("causal", C.c_int),
        ("block_size", C.c_int32),
        ("n_sink", C.c_int32),
        ("n_local", C.c_int32),
        ("alpha", C.c_double),
        ("selection", C.c_int),
        ("topk", C.c_int32),
        ("group_mode", C.c_int),
        ("scale", C.c_double),
        ("stage1_scale", C.c_double),
        ("prior", C.c_int),
        ("prior_sigma", C.c_double),
        ("threshold_schedule", C.c_int),
        ("halley_steps", C.c_int32),
    ]


class Selection(C.Structure):
    _fields_ = [
        ("block_index", C.c_void_p),  # int32_t * in the context's memory
        ("block_weight", C.c_void_p),  # float *
        ("block_count", C.c_void_p),  # int32_t *
        ("max_blocks", C.c_int64),
    ]


class ForwardStats(C.Structure):
    _fields_ = [
        ("visible_pairs", C.c_int64),
        ("attended_pairs", C.c_int64),
        ("sparsity", C.c_double),
    ]


class KVCache(C.Structure):
    _fields_ = [
        ("layout", C.c_int),
        ("k", Tensor),
        ("v", Tensor),
        ("block_keys", Tensor),
        ("seq_lens", C.c_void_p),  # int32_t * in the context's memory
        ("block_table", C.c_void_p),  # const int32_t *
        ("table_stride", C.c_int64),
    ]


class DashattnError(RuntimeError):
    def __init__(self, func, status, message):
        self.func = func
        self.status = status
        self.message = message
        name = STATUS_NAMES.get(status, str(status))
        super().__init__(f"{func} failed with DASHATTN_ERR_{name}: {message}")


_ctx_p = C.c_void_p
_plan_p = C.c_void_p
_T = C.POINTER(Tensor)

# name: (restype, argtypes); restype C.c_int means a dashattn_status to check.
_PROTOTYPES = {
    "dashattn_version": (C.c_char_p, []),
    "dashattn_status_string": (C.c_char_p, [C.c_int]),
    "dashattn_last_error": (C.c_char_p, []),
    "dashattn_dtype_size": (C.c_size_t, [C.c_int]),
    "dashattn_dtype_name": (C.c_char_p, [C.c_int]),
    "dashattn_convert": (C.c_int, [C.c_void_p, C.c_int, C.c_void_p, C.c_int, C.c_size_t]),
    "dashattn_tensor_bhsd": (Tensor, [C.c_void_p, C.c_int] + [C.c_int64] * 4),
    "dashattn_tensor_bshd": (Tensor, [C.c_void_p, C.c_int] + [C.c_int64] * 4),
    "dashattn_context_options_init": (None, [C.POINTER(ContextOptions)]),
    "dashattn_context_create": (C.c_int, [C.POINTER(ContextOptions), C.POINTER(_ctx_p)]),
    "dashattn_context_destroy": (None, [_ctx_p]),
    "dashattn_context_backend": (C.c_char_p, [_ctx_p]),
    "dashattn_context_device": (C.c_char_p, [_ctx_p]),
    "dashattn_context_num_threads": (C.c_int, [_ctx_p]),
    "dashattn_backends_report": (C.c_size_t, [C.c_char_p, C.c_size_t]),
    "dashattn_memory_alloc": (C.c_int, [_ctx_p, C.c_size_t, C.POINTER(C.c_void_p)]),
    "dashattn_memory_free": (None, [_ctx_p, C.c_void_p]),
    "dashattn_memory_upload": (C.c_int, [_ctx_p, C.c_void_p, C.c_void_p, C.c_size_t]),
    "dashattn_memory_download": (C.c_int, [_ctx_p, C.c_void_p, C.c_void_p, C.c_size_t]),
    "dashattn_synchronize": (C.c_int, [_ctx_p, C.c_void_p]),
    "dashattn_problem_init": (None, [C.POINTER(Problem)] + [C.c_int64] * 6),
    "dashattn_plan_create": (C.c_int, [_ctx_p, C.POINTER(Problem), C.POINTER(_plan_p)]),
    "dashattn_plan_destroy": (None, [_plan_p]),
    "dashattn_plan_problem": (C.POINTER(Problem), [_plan_p]),
    "dashattn_plan_num_blocks": (C.c_int64, [_plan_p]),
    "dashattn_plan_workspace_size": (C.c_size_t, [_plan_p]),
    "dashattn_plan_operation_workspace_size": (C.c_size_t, [_plan_p, C.c_int]),
    "dashattn_plan_threshold_method": (C.c_char_p, [_plan_p]),
    "dashattn_plan_threshold_iterations": (C.c_int, [_plan_p]),
    "dashattn_forward": (
        C.c_int,
        [_ctx_p, _plan_p, _T, _T, _T, _T, _T, C.c_void_p, C.POINTER(Selection),
         C.POINTER(ForwardStats), C.c_void_p, C.c_size_t, C.c_void_p],
    ),
    "dashattn_backward": (
        C.c_int,
        [_ctx_p, _plan_p, _T, _T, _T, _T, _T, C.c_void_p, _T, _T, _T, _T, _T, C.c_void_p,
         C.c_size_t, C.c_void_p],
    ),
    "dashattn_cache_append": (C.c_int,
                              [_ctx_p, _plan_p, C.POINTER(KVCache), _T, _T, _T, C.c_void_p]),
    "dashattn_decode": (
        C.c_int,
        [_ctx_p, _plan_p, _T, C.POINTER(KVCache), _T, C.c_void_p, C.c_void_p, C.c_size_t,
         C.c_void_p],
    ),
}


class VersionMismatch(ImportError):
    """The loaded library's version is not one this binding mirrors."""


def parse_version(text):
    parts = text.split("-")[0].split("+")[0].split(".")
    try:
        return tuple(int(x) for x in parts[:3])
    except ValueError:
        raise VersionMismatch(f"libdashattn reports an unreadable version {text!r}") from None


def check_version_compatible(text, path):
    got = parse_version(text)
    # Before 1.0 a minor release may change a struct; a newer minor of the
    # same soname only adds functions.
    if got[0] != HEADER_VERSION[0] or got[:2] < HEADER_VERSION[:2]:
        want = ".".join(map(str, HEADER_VERSION))
        raise VersionMismatch(
            f"{path} is libdashattn {text}, but this binding mirrors dashattn.h {want} "
            f"(needs {HEADER_VERSION[0]}.x, at least {want}); point DASHATTN_LIBRARY at a "
            f"matching build")


def _text(value):
    return value.decode("utf-8", "replace") if value is not None else None


class Library:
    """The loaded shared library with typed functions and status checking."""

    def __init__(self, path, check_version=True):
        # A bare soname (no directory) is left to the dynamic loader's search.
        if os.sep in path and not os.path.exists(path):
            raise FileNotFoundError(f"libdashattn not found at {path} (build it, or pass --lib)")
        self.path = os.path.abspath(path) if os.sep in path else path
        self.dll = C.CDLL(self.path)
        self.fn = {}
        for name, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(self.dll, name)
            f.restype = restype
            f.argtypes = argtypes
            self.fn[name] = f
        if check_version:
            check_version_compatible(self.version(), self.path)

    def last_error(self):
        return _text(self.fn["dashattn_last_error"]())

    def check(self, name, *args):
        """Call a status-returning function; raise DashattnError on failure."""
        status = self.fn[name](*args)
        if status != OK:
            raise DashattnError(name, status, self.last_error())

    def version(self):
        return _text(self.fn["dashattn_version"]())

    def backends_report(self):
        need = self.fn["dashattn_backends_report"](None, 0)
        buf = C.create_string_buffer(need + 1)
        self.fn["dashattn_backends_report"](buf, need + 1)
        return _text(buf.value)

    def convert(self, dst_ptr, dst_dtype, src_ptr, src_dtype, count):
        self.check("dashattn_convert", dst_ptr, dst_dtype, src_ptr, src_dtype, count)

    def tensor_bhsd(self, data, dtype, b, h, n, d):
        return self.fn["dashattn_tensor_bhsd"](data, dtype, b, h, n, d)

    def tensor_bshd(self, data, dtype, b, h, n, d):
        return self.fn["dashattn_tensor_bshd"](data, dtype, b, h, n, d)

    def problem(self, batch, heads_q, heads_kv, len_q, len_k, head_dim, **fields):
        """A dashattn_problem from dashattn_problem_init with fields overridden."""
        p = Problem()
        self.fn["dashattn_problem_init"](C.byref(p), batch, heads_q, heads_kv, len_q, len_k,
                                         head_dim)
        for key, value in fields.items():
            if not hasattr(p, key):
                raise AttributeError(f"dashattn_problem has no field {key}")
            setattr(p, key, value)
        return p


def bhsd(data, dtype, shape):
    """A contiguous [B, H, N, D] tensor view, built here (no library call)."""
    b, h, n, d = (int(x) for x in shape)
    t = Tensor()
    t.data = data
    t.dtype = dtype
    t.shape[:] = [b, h, n, d]
    t.strides[:] = [h * n * d, n * d, d, 1]
    return t


class Buffer:
    """One allocation in a context's memory space (never offset into)."""

    def __init__(self, ctx, nbytes):
        self.ctx = ctx
        self.nbytes = int(nbytes)
        ptr = C.c_void_p()
        ctx.lib.check("dashattn_memory_alloc", ctx.handle, self.nbytes, C.byref(ptr))
        self.ptr = ptr.value
        ctx.buffers.add(self)

    def upload(self, host_ptr, nbytes=None):
        n = self.nbytes if nbytes is None else int(nbytes)
        if n > self.nbytes:
            raise ValueError(f"upload of {n} bytes into a buffer of {self.nbytes}")
        self.ctx.lib.check("dashattn_memory_upload", self.ctx.handle, self.ptr, host_ptr, n)

    def upload_array(self, array):
        """Upload a C-contiguous numpy array (its raw bytes) to the buffer's start."""
        if not array.flags["C_CONTIGUOUS"]:
            raise ValueError("upload_array needs a C-contiguous array")
        self.upload(array.ctypes.data, array.nbytes)

    def download_into(self, array):
        if not array.flags["C_CONTIGUOUS"] or not array.flags["WRITEABLE"]:
            raise ValueError("download_into needs a writeable C-contiguous array")
        if array.nbytes > self.nbytes:
            raise ValueError(f"download of {array.nbytes} bytes from a buffer of {self.nbytes}")
        self.ctx.lib.check("dashattn_memory_download", self.ctx.handle, array.ctypes.data,
                           self.ptr, array.nbytes)
        return array

    def free(self):
        if self.ptr is not None:
            self.ctx.lib.fn["dashattn_memory_free"](self.ctx.handle, self.ptr)
            self.ptr = None
            self.ctx.buffers.discard(self)


class Context:
    """A dashattn context; owns its buffers and plans until close()."""

    def __init__(self, lib, backend, device=0, num_threads=0):
        self.lib = lib
        self.buffers = set()
        self.plans = []
        opts = ContextOptions()
        lib.fn["dashattn_context_options_init"](C.byref(opts))
        self._backend_name = backend.encode()  # kept alive for the call
        opts.backend = self._backend_name
        opts.device = device
        opts.num_threads = num_threads
        handle = C.c_void_p()
        lib.check("dashattn_context_create", C.byref(opts), C.byref(handle))
        self.handle = handle.value
        self.backend = _text(lib.fn["dashattn_context_backend"](self.handle))
        self.device = _text(lib.fn["dashattn_context_device"](self.handle))
        self.num_threads = lib.fn["dashattn_context_num_threads"](self.handle)

    def alloc(self, nbytes):
        return Buffer(self, nbytes)

    def synchronize(self):
        self.lib.check("dashattn_synchronize", self.handle, None)

    def plan(self, problem):
        return Plan(self, problem)

    def close(self):
        for p in list(self.plans):
            p.destroy()
        for b in list(self.buffers):
            b.free()
        if self.handle is not None:
            self.lib.fn["dashattn_context_destroy"](self.handle)
            self.handle = None


class Plan:
    def __init__(self, ctx, problem):
        self.ctx = ctx
        lib = ctx.lib
        handle = C.c_void_p()
        lib.check("dashattn_plan_create", ctx.handle, C.byref(problem), C.byref(handle))
        self.handle = handle.value
        ctx.plans.append(self)
        self.problem = Problem.from_buffer_copy(lib.fn["dashattn_plan_problem"](self.handle)[0])
        self.num_blocks = lib.fn["dashattn_plan_num_blocks"](self.handle)
        self.threshold_method = _text(lib.fn["dashattn_plan_threshold_method"](self.handle))

    def workspace_size(self, op=None):
        if op is None:
            return self.ctx.lib.fn["dashattn_plan_workspace_size"](self.handle)
        return self.ctx.lib.fn["dashattn_plan_operation_workspace_size"](self.handle, op)

    def workspace(self, op):
        """A workspace buffer for op, allocated once so timed calls never allocate."""
        size = self.workspace_size(op)
        return self.ctx.alloc(size), size

    def destroy(self):
        if self.handle is not None:
            self.ctx.lib.fn["dashattn_plan_destroy"](self.handle)
            self.handle = None
            self.ctx.plans.remove(self)


def problem_dict(p):
    return {name: getattr(p, name) for name, _ in Problem._fields_}


def _ref(x):
    return C.byref(x) if x is not None else None


def forward(ctx, plan, q, k, v, out, lse=None, selection=None, stats=None, workspace=None,
            workspace_size=0, summary=None):
    """dashattn_forward on the backend's default stream; q, k, v, out (and the
    optional learned block summary) are Tensors."""
    ctx.lib.check("dashattn_forward", ctx.handle, plan.handle, C.byref(q), C.byref(k),
                  C.byref(v), _ref(summary), C.byref(out), lse, _ref(selection), _ref(stats),
                  workspace, workspace_size, None)


def cache_append(ctx, plan, cache, k_new, v_new, summary=None):
    ctx.lib.check("dashattn_cache_append", ctx.handle, plan.handle, C.byref(cache),
                  C.byref(k_new), C.byref(v_new), _ref(summary), None)


def decode(ctx, plan, q, cache, out, lse=None, workspace=None, workspace_size=0):
    ctx.lib.check("dashattn_decode", ctx.handle, plan.handle, C.byref(q), C.byref(cache),
                  C.byref(out), lse, workspace, workspace_size, None)


def bound_call(ctx, name, *args):
    """A no-argument callable for a timed loop: arguments are converted once,
    and the status is still checked on every call. Structures in args must
    outlive the callable."""
    f = ctx.lib.fn[name]
    lib = ctx.lib
    frozen = tuple(C.byref(a) if isinstance(a, C.Structure) else a for a in args)

    def call():
        status = f(*frozen)
        if status != OK:
            raise DashattnError(name, status, lib.last_error())

    return call


def forward_on_stream(ctx, plan, q, k, v, out, lse=None, selection=None, stats=None,
                      workspace=None, workspace_size=0, summary=None, stream=None):
    """forward() on a given native stream (cudaStream_t for cuda)."""
    ctx.lib.check("dashattn_forward", ctx.handle, plan.handle, C.byref(q), C.byref(k),
                  C.byref(v), _ref(summary), C.byref(out), lse, _ref(selection), _ref(stats),
                  workspace, workspace_size, stream)
