"""Mixed precision where the hardware runs it natively.

bf16 autocast halves the bytes moved and, on hardware with bf16 units, doubles the arithmetic
rate: CUDA GPUs, and CPUs whose oneDNN has bf16 kernels (AVX512-BF16 or AMX). On this project's
2-core AMD EPYC (AVX512-BF16) it makes a full-width training step 1.5-2x faster (benchmarks/run.py,
step 1). On a CPU without them oneDNN would emulate bf16, slower than fp32, so such CPUs stay in
fp32. Weights, gradients and the optimiser stay fp32 either way.
"""
import contextlib

import torch


def bf16_native(device):
    """Whether `device` (a torch.device or string) runs bf16 convolutions natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast(device, bf16=True):
    """A fresh context manager: bf16 autocast on `device` when asked for and native, else none."""
    device = torch.device(device)
    if bf16 and bf16_native(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensor, device):
    """`tensor` on `device` without making the host wait. A CUDA copy from pageable memory ends with
    a stream synchronisation, so the host could not queue the next step's kernels until the GPU had
    finished the queued ones, and small nets' steps are launch-bound; from pinned memory the copy is
    queued like a kernel. Elsewhere (CPU) a plain `.to`, which is free when already there."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
