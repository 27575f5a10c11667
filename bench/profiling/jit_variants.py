"""TorchScript fuser settings to compare (bench/batch_size_bench.py in one process each;
bench/e2e_bench.py --jit-variant in the processes that load the model, through
sitecustomize.py). Process-wide: set them before the model first runs."""

VARIANTS = ('default', 'dynamic', 'no-fuser')


def apply_variant(variant: str) -> None:
    """`default`: as torch has it (kernels for two exact input shapes, then for up to ten
    shape-generic ones, compiled as new shapes come); `dynamic`: shape-generic from the first
    shape on; `no-fuser`: TorchScript's kernel fuser off."""
    if variant not in VARIANTS:
        raise ValueError(f'jit variant {variant!r}: want one of {", ".join(VARIANTS)}')
    import torch
    if variant == 'dynamic':
        torch.jit.set_fusion_strategy([('DYNAMIC', 10)])
    elif variant == 'no-fuser':
        torch._C._jit_set_texpr_fuser_enabled(False)
