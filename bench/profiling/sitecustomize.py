"""Put on PYTHONPATH by `bench/e2e_bench.py` for --profile-detector or --jit-variant only;
does nothing elsewhere, and in every process it does only what the bench asked through the
environment:
- PROFILE_ENV set: lets a sampling profiler that is not this process's ancestor (py-spy,
  started by the bench) read it where Yama's ptrace_scope is 1;
- JIT_VARIANT_ENV set: in the processes that load the model (the detector's model process, a
  detector_node of a revision that loaded it itself, the bench's pool, single and ceiling
  roles), TorchScript's fuser set as jit_variants.py says, before the model runs; the others
  (cameras, launcher, probes) never import torch for it."""
import os
import sys

PROFILE_ENV = 'MULTICAM_E2E_PROFILE'
JIT_VARIANT_ENV = 'MULTICAM_E2E_JIT_VARIANT'
_MODEL_COMMANDS = ('multicam_ros.core.model_process', 'detector_node')
_MODEL_ROLES = ('pool', 'single', 'ceiling')


def _loads_the_model(argv) -> bool:
    if any(word in _MODEL_COMMANDS for word in argv):
        return True
    return any(word == '--role' and following in _MODEL_ROLES
               for word, following in zip(argv, argv[1:]))


if os.environ.get(PROFILE_ENV):
    import ctypes
    PR_SET_PTRACER = 0x59616D61
    PR_SET_PTRACER_ANY = -1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(
            PR_SET_PTRACER, ctypes.c_ulong(PR_SET_PTRACER_ANY), 0, 0, 0)
    except (OSError, AttributeError):
        pass

if os.environ.get(JIT_VARIANT_ENV) and _loads_the_model(getattr(sys, 'orig_argv', sys.argv)):
    from jit_variants import apply_variant
    apply_variant(os.environ[JIT_VARIANT_ENV])
