import contextlib

import pytest
import torch

from vgg import device, models


def tiny_net():
    torch.manual_seed(0)
    return models.build_model("A", width=0.0625, fc_width=16, num_classes=10, crop=28).eval()


def test_bf16_off_is_plain_fp32():
    net, x = tiny_net(), torch.randn(2, 3, 28, 28)
    with device.autocast("cpu", bf16=False):
        out = net(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, net(x))


@pytest.mark.skipif(not device.bf16_native("cpu"), reason="this CPU has no native bf16 kernels")
def test_bf16_on_a_native_cpu_runs_in_bf16_close_to_fp32():
    net, x = tiny_net(), torch.randn(4, 3, 28, 28) * 50
    with torch.inference_mode(), device.autocast("cpu", bf16=True):
        out = net(x)
    assert out.dtype == torch.bfloat16
    reference = net(x)
    assert not torch.equal(out.float(), reference)
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05 * reference.abs().max().item())


def test_a_cpu_without_bf16_kernels_stays_fp32(monkeypatch):
    # Emulated bf16 would be slower than fp32, so such a CPU must not get autocast.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not device.bf16_native("cpu")
    net, x = tiny_net(), torch.randn(2, 3, 28, 28)
    with device.autocast("cpu", bf16=True):
        out = net(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, net(x))


def test_an_unknown_device_type_gets_no_autocast():
    assert not device.bf16_native("meta")
    assert isinstance(device.autocast("meta", bf16=True), contextlib.nullcontext)
