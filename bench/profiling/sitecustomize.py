"""Put on PYTHONPATH by `bench/e2e_bench.py --profile-detector` only: lets a sampling profiler
that is not this process's ancestor (py-spy, started by the bench) read it where Yama's
ptrace_scope is 1. Does nothing elsewhere."""
import ctypes

PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = -1
try:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, ctypes.c_ulong(PR_SET_PTRACER_ANY),
                                            0, 0, 0)
except (OSError, AttributeError):
    pass
