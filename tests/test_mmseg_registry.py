"""The gated backbone in mmsegmentation's registry, checked against a stand-in for mmseg's API (mmseg
itself needs an mmcv source build, so it is not installed for the tests)."""

import sys
import types

import torch
from torch import nn

from integrations import mmseg_registry


class _Registry:
    def __init__(self):
        self.module_dict = {}

    def register_module(self, name, module):
        if name in self.module_dict:
            raise KeyError(f"{name} is already registered")  # as mmengine's Registry does
        self.module_dict[name] = module


class _EncoderDecoder(nn.Module):
    """What the segmentor relies on: `self.backbone`, and `loss` returning the heads' losses."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def loss(self, inputs, data_samples):
        return {"loss_decode": self.backbone(inputs)[-1].mean()}


def _stand_in(monkeypatch) -> _Registry:
    registry = _Registry()
    modules = {
        "mmseg": types.ModuleType("mmseg"),
        "mmseg.registry": types.ModuleType("mmseg.registry"),
        "mmseg.models": types.ModuleType("mmseg.models"),
        "mmseg.models.segmentors": types.ModuleType("mmseg.models.segmentors"),
    }
    modules["mmseg.registry"].MODELS = registry
    modules["mmseg.models.segmentors"].EncoderDecoder = _EncoderDecoder
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return registry


def test_without_mmseg_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmseg", None)  # import mmseg raises ImportError
    assert mmseg_registry.register() is False


def test_the_gated_backbone_and_its_segmentor_register_and_add_the_gate_losses(monkeypatch):
    registry = _stand_in(monkeypatch)
    assert mmseg_registry.register() and mmseg_registry.register()  # a second import does not fail
    backbone = registry.module_dict[mmseg_registry.BACKBONE](total_iters=4)
    stages = backbone.eval()(torch.zeros(1, 3, 64, 64))
    # stages 2 to 5 of a dilated ResNet-50: strides 4, 8, 8, 8 (output stride 8), as mmseg's ResNetV1c-D8
    assert [tuple(s.shape[1:]) for s in stages] == [(256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)]
    segmentor = registry.module_dict[mmseg_registry.SEGMENTOR](backbone.train())
    losses = segmentor.loss(torch.randn(4, 3, 64, 64), None)
    assert {"loss_decode", "loss_gate_batch_shaping", "loss_gate_l0"} <= set(losses), sorted(losses)
    assert backbone.iters == 1 and backbone.progress() == 0.25
    sum(losses.values()).backward()  # the summed losses train the gates
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in backbone.named_parameters() if "gate" in n
    )
