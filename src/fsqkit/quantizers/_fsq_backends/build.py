"""Build, cache and load the fused CPU FSQ kernel (``fsq_cpu.c``, ``fsq_cpu_edges.c``,
``fsq_cpu.h``) at first use.

Nothing is compiled at install time. The first call to :func:`get_cpu_kernel`
compiles the C sources with the system C compiler (about a second) into a cache
directory (``$FSQKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fsqkit``, else
``~/.cache/fsqkit``), keyed by a hash of the source and flags, so later
processes only load it. The file is written to a temporary name and moved in
with ``os.replace``, so concurrent processes never see half a library.

The kernel must reproduce ``torch.tanh`` bit for bit (codes sit on bin edges
otherwise; see ``fsq_cpu.h``). ATen's CPU ``tanh`` for float32 is MKL VML's
``vmsTanh`` in MKL builds of torch and SLEEF's ``tanhf*_u10`` otherwise; both
are exported by ``libtorch_cpu``. We resolve each candidate, run it through the
kernel on a probe and keep the first that matches ``torch.tanh`` exactly; then
a small end-to-end check compares the fused forward with the reference ops.

Whenever something is missing (no compiler, not x86-64 Linux, no matching tanh,
a failed check) the caller gets ``None`` and one log line says why; the FSQ
module then runs the reference path. ``FSQKIT_NO_FAST_KERNEL=1`` disables the
kernel.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

Geometry = tuple[int, int, int]  # (outer, C, inner)
Consts = dict[str, Tensor]

log = logging.getLogger("fsqkit.fast")

SOURCES = tuple(
    Path(__file__).with_name(n) for n in ("fsq_cpu.c", "fsq_cpu_edges.c", "fsq_cpu_tanh.c")
)
HEADERS = (Path(__file__).with_name("fsq_cpu.h"),)
# -ffp-contract=off: no fused multiply-adds, every float op rounds like torch's.
# -fno-math-errno/-fno-trapping-math (as torch's own build) let nearbyintf vectorize.
CFLAGS = (
    "-O3",
    "-fPIC",
    "-shared",
    "-fopenmp",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-mavx2",
    "-mfma",
    "-mf16c",
)
# ATen's vml.h calls vmsTanh with VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE.
VML_MODE = 0x2 | 0x140000 | 0x100
TANH_VML, TANH_SLEEF8, TANH_SLEEF16 = 0, 1, 2
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
MAX_EDGES = 63  # MAXK in fsq_cpu_edges.c
MAX_PATTERN = 2048  # MAXPAT in fsq_cpu_edges.c

TORCH_CPU = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"  # tanh and MKL symbols

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "kernel": None, "reason": None}


def cache_dir() -> Path:
    """Where compiled kernels are kept (created on demand)."""
    env = os.environ.get("FSQKIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fsqkit"


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be used here; the message says why."""


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise KernelUnavailable("no C compiler found (install gcc or set CC)")
    return cc


# Added where torch itself runs its AVX512 kernels: twice the vector width.
AVX512_FLAGS = ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl")


def _flags() -> tuple[str, ...]:
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return CFLAGS + AVX512_FLAGS
    return CFLAGS


def _build() -> Path:
    source = b"".join(p.name.encode() + p.read_bytes() for p in (*SOURCES, *HEADERS))
    cc = _compiler()
    flags = _flags()
    key = hashlib.sha256(source + " ".join((cc, *flags)).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"fsq_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the fused FSQ CPU kernel once, into %s", target)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *flags, "-o", tmp, *map(str, SOURCES)], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
            raise KernelUnavailable(f"{cc} failed to build the FSQ kernel: {' '.join(first)}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelUnavailable(f"could not run the C compiler {cc}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _tanh_candidates() -> list[tuple[str, int, int]]:
    """(name, kind, address) of the tanh functions libtorch_cpu exports."""
    if not TORCH_CPU.exists():
        raise KernelUnavailable(f"{TORCH_CPU} not found")
    torch_cpu = ctypes.CDLL(str(TORCH_CPU))  # already loaded: this only gets a handle
    capability = torch.backends.cpu.get_cpu_capability()
    wanted = [("VMSTANH_64_", TANH_VML)]
    if capability.startswith("AVX512"):
        wanted.append(("Sleef_tanhf16_u10", TANH_SLEEF16))
    if capability.startswith(("AVX2", "AVX512")):
        wanted.append(("Sleef_tanhf8_u10", TANH_SLEEF8))
    found = []
    for name, kind in wanted:
        try:
            fn = getattr(torch_cpu, name)
        except AttributeError:
            continue
        found.append((name, kind, ctypes.cast(fn, ctypes.c_void_p).value))
    return found


@functools.cache
def _mkl_local_threads() -> int | None:
    """Address of MKL's ``mkl_set_num_threads_local`` (C API) in libtorch_cpu, if any."""
    try:
        fn = ctypes.CDLL(str(TORCH_CPU)).MKL_Set_Num_Threads_Local  # C API, by value
    except (OSError, AttributeError):
        return None
    return ctypes.cast(fn, ctypes.c_void_p).value


def _tanh_probe() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    special = torch.tensor(
        [0.0, -0.0, 1e-30, -1e-30, 1e-8, 0.5, 0.55, 1.0, 9.0, 9.01, 10.0, 20.0, 88.0, -88.0]
    )
    return torch.cat(
        [
            torch.randn(16384, generator=g) * 3.0,
            torch.linspace(-12.0, 12.0, 8191),
            (torch.rand(4096, generator=g) - 0.5) * 1e-3,
            special,
        ]
    ).contiguous()


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


def _typed(t: Tensor) -> tuple[ctypes.c_void_p, int]:
    return _ptr(t), DTYPE_CODES[t.dtype]


def _named(consts: Consts, *names: str) -> list[ctypes.c_void_p]:
    return [_ptr(consts[n]) for n in names]


def _matches_torch_tanh(lib: ctypes.CDLL) -> bool:
    probe = _tanh_probe()
    ref = torch.tanh(probe)
    out = torch.empty_like(probe)
    lib.fsq_tanh(_ptr(probe), _ptr(out), ctypes.c_int64(probe.numel()))
    if not torch.equal(out.view(torch.int32), ref.view(torch.int32)):
        return False
    # short calls take tail paths in vector libraries: check some lengths too
    for n in (1, 7, 13, 100):
        piece = probe[5000 : 5000 + n].clone()
        lib.fsq_tanh(_ptr(piece), _ptr(out), ctypes.c_int64(n))
        if not torch.equal(out[:n].view(torch.int32), torch.tanh(piece).view(torch.int32)):
            return False
    return True


def _switch_fast_tanh(lib: ctypes.CDLL, on: bool) -> bool:
    """Turn the fast tanh (fsq_cpu_tanh.c) on or off; returns whether it is on
    (never where the kernel was built without AVX-512)."""
    return bool(lib.fsq_set_fast_tanh(int(on), _mkl_local_threads()))


def _fast_tanh_matches(lib: ctypes.CDLL) -> bool:
    """Whether the fast tanh gives vmsTanh's bits here, on the probe and on 2^20
    more floats spread over (-10, 10) and the small magnitudes. Leaves it off."""
    if not _switch_fast_tanh(lib, True):
        return False
    g = torch.Generator().manual_seed(4321)
    n = 1 << 19
    uniform = torch.rand(n, generator=g) * 20 - 10
    small = (torch.rand(n, generator=g, dtype=torch.float64) * 30 - 32).exp2().float()
    probe = torch.cat([_tanh_probe(), uniform, small, -small]).contiguous()
    out = torch.empty_like(probe)
    lib.fsq_tanh(_ptr(probe), _ptr(out), ctypes.c_int64(probe.numel()))
    _switch_fast_tanh(lib, False)
    if not torch.equal(out.view(torch.int32), torch.tanh(probe).view(torch.int32)):
        log.info("the fast tanh differs from this machine's vmsTanh on the probe: not used")
        return False
    return True


class CpuKernel:
    """ctypes wrapper of the compiled kernel; tensors must be contiguous CPU."""

    def __init__(self, lib: ctypes.CDLL, tanh_name: str, path: Path) -> None:
        self.lib = lib
        self.tanh_name = tanh_name
        self.path = path
        self.fast_tanh_verified = False  # set by _load
        self.fast_tanh = False
        i64, ci = ctypes.c_int64, ctypes.c_int
        p = ctypes.c_void_p
        lib.fsq_forward.restype = ci
        lib.fsq_forward.argtypes = [p, ci, p, ci, p, p, i64, i64, i64, *([p] * 7), ci, ci, ci, ci]
        lib.fsq_backward.restype = None
        lib.fsq_backward.argtypes = [p, ci, p, p, ci, i64, i64, i64, p, p, p, p, ci, ci, ci]
        lib.fsq_edges_pattern.restype = ci
        lib.fsq_edges_pattern.argtypes = [i64]
        lib.fsq_forward_edges.restype = ci
        lib.fsq_forward_edges.argtypes = [p, ci, p, ci, p, i64, i64, i64, p, ci, p, p, p]
        lib.fsq_forward_edges.argtypes += [ci, ci, ci, ci]
        lib.fsq_set_vector_width.restype = None
        lib.fsq_set_vector_width.argtypes = [ci]
        lib.fsq_backward_z.restype = ci
        lib.fsq_backward_z.argtypes = [p, ci, p, ci, p, ci, i64, i64, i64, p, p, p, p, p]
        lib.fsq_backward_z.argtypes += [ci, ci, ci]

    def edges_fit(self, C: int, K: int, channel_last: bool) -> bool:
        """Whether :meth:`forward_edges` takes ``K`` edges per dimension for ``C``
        channels (the channel-last pattern table is at most 16384 floats)."""
        if K > MAX_EDGES:
            return False
        return not channel_last or self.lib.fsq_edges_pattern(C) * K <= 8 * MAX_PATTERN

    def set_fast_tanh(self, on: bool) -> bool:
        """Compute tanh with the fast routine that reproduces MKL's vmsTanh bit
        for bit (fsq_cpu_tanh.c), or call vmsTanh for every element. It can only
        be on where it passed the check at load time (which turns it on); returns
        whether it is on now."""
        self.fast_tanh = _switch_fast_tanh(self.lib, on and self.fast_tanh_verified)
        return self.fast_tanh

    def set_vector_width(self, width: int) -> None:
        """Vector loops of the bin-edge forward: 16 lanes (AVX-512, the default
        where the kernel is built with it) or 8 (AVX2). Both give identical
        results; the tests run both."""
        if width not in (8, 16):
            raise ValueError(f"vector width must be 8 or 16, got {width}")
        self.lib.fsq_set_vector_width(width)

    # The wrappers below pass tensors as (pointer, dtype code) where the C side
    # takes both, the per-dimension constants by name from
    # fsqkit.quantizers._fsq_backends.fused.kernel_constants, and torch's thread count.

    def forward_edges(
        self, z: Tensor, out: Tensor, indices: Tensor, geometry: Geometry, edges: Tensor,
        consts: Consts, D: int, G: int, symmetric: bool,
    ) -> bool:  # fmt: skip
        """Fill ``out`` (codes) and ``indices`` by comparing ``z`` with the bin
        ``edges`` ``(D, K)`` (no tanh). Returns True if ``z`` held NaN/inf."""
        bad = self.lib.fsq_forward_edges(
            *_typed(z), *_typed(out), _ptr(indices), *geometry, _ptr(edges), edges.shape[1],
            *_named(consts, "half_width", "sym_scale", "basis"),
            D, G, int(symmetric), torch.get_num_threads(),
        )  # fmt: skip
        if bad < 0:
            raise RuntimeError("fsq_forward_edges: edge table too large (check edges_fit first)")
        return bool(bad)

    def backward_z(
        self, grad: Tensor, z: Tensor, grad_z: Tensor, geometry: Geometry, consts: Consts,
        D: int, symmetric: bool,
    ) -> None:  # fmt: skip
        """Fill ``grad_z`` from ``grad`` (of the codes), recomputing tanh from ``z``."""
        failed = self.lib.fsq_backward_z(
            *_typed(grad), *_typed(z), *_typed(grad_z), *geometry,
            *_named(consts, "shift", "half_l", "half_width", "lm1", "sym_scale"),
            D, int(symmetric), torch.get_num_threads(),
        )  # fmt: skip
        if failed:
            raise MemoryError("FSQ backward: could not allocate the kernel's tile buffers")

    def forward(
        self, z: Tensor, out: Tensor, saved_t: Tensor | None, indices: Tensor,
        geometry: Geometry, consts: Consts, D: int, G: int, symmetric: bool,
    ) -> bool:  # fmt: skip
        """Fill ``out`` (codes), ``saved_t`` (tanh, optional) and ``indices``.
        ``geometry = (outer, C, inner)``. Returns True if ``z`` held NaN/inf."""
        bad = self.lib.fsq_forward(
            *_typed(z), *_typed(out), _ptr(saved_t), _ptr(indices), *geometry,
            *_named(consts, "shift", "half_l", "offset", "half_width", "lm1", "sym_scale",
                    "basis"),
            D, G, int(symmetric), torch.get_num_threads(),
        )  # fmt: skip
        return bool(bad)

    def backward(
        self, grad: Tensor, saved_t: Tensor, grad_z: Tensor, geometry: Geometry,
        consts: Consts, D: int, symmetric: bool,
    ) -> None:  # fmt: skip
        """Fill ``grad_z`` from ``grad`` (of the codes) and the saved tanh."""
        self.lib.fsq_backward(
            *_typed(grad), _ptr(saved_t), *_typed(grad_z), *geometry,
            *_named(consts, "half_l", "half_width", "lm1", "sym_scale"),
            D, int(symmetric), torch.get_num_threads(),
        )  # fmt: skip


def _load() -> CpuKernel:
    if os.environ.get("FSQKIT_NO_FAST_KERNEL", "") not in ("", "0"):
        raise KernelUnavailable("disabled by FSQKIT_NO_FAST_KERNEL")
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        raise KernelUnavailable(
            f"only built for x86-64 Linux, not {sys.platform}/{platform.machine()}"
        )
    if not torch.backends.cpu.get_cpu_capability().startswith(("AVX2", "AVX512")):
        raise KernelUnavailable("the CPU (or ATEN_CPU_CAPABILITY) lacks AVX2")
    candidates = _tanh_candidates()
    if not candidates:
        raise KernelUnavailable("libtorch_cpu exports no known tanh primitive (MKL VML or SLEEF)")
    path = _build()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise KernelUnavailable(f"could not load {path}: {exc}") from exc
    lib.fsq_set_tanh.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64]
    lib.fsq_tanh.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.fsq_set_fast_tanh.restype = ctypes.c_int
    lib.fsq_set_fast_tanh.argtypes = [ctypes.c_int, ctypes.c_void_p]
    for name, kind, address in candidates:
        lib.fsq_set_tanh(kind, address, VML_MODE)
        _switch_fast_tanh(lib, False)
        if _matches_torch_tanh(lib):
            kernel = CpuKernel(lib, name, path)
            kernel.fast_tanh_verified = kind == TANH_VML and _fast_tanh_matches(lib)
            kernel.set_fast_tanh(True)
            return kernel
    names = ", ".join(n for n, _, _ in candidates)
    raise KernelUnavailable(f"none of the tanh primitives ({names}) reproduces torch.tanh exactly")


def get_cpu_kernel() -> CpuKernel | None:
    """The loaded kernel, or None (after one log line saying why) if unavailable."""
    if _state["tried"]:
        return _state["kernel"]  # type: ignore[return-value]
    with _lock:
        if not _state["tried"]:
            try:
                _state["kernel"] = _load()
            except KernelUnavailable as exc:
                _state["reason"] = str(exc)
                log.warning(
                    "fsqkit: fused FSQ CPU kernel unavailable (%s); using the reference path", exc
                )
            _state["tried"] = True
    return _state["kernel"]  # type: ignore[return-value]


def unavailable_reason() -> str | None:
    """Why :func:`get_cpu_kernel` returned None (None if it was not tried or worked)."""
    return _state["reason"]  # type: ignore[return-value]


def _reset_for_tests() -> None:
    """Forget the loaded kernel so the next call retries (tests only)."""
    with _lock:
        _state.update(tried=False, kernel=None, reason=None)
