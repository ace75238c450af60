"""The Batch-Shaping gated ResNet-50 in mmsegmentation's registry, for users who have mmsegmentation.

mmsegmentation is not a dependency: its mmcv has no wheel for this torch (it needs a patched source
build, about 10 to 25 minutes). Where it is installed, a config takes the gated backbone
and the segmentor that adds the gates' losses by importing this module:

    custom_imports = dict(imports=["integrations.mmseg_registry"], allow_failed_imports=False)
    model = dict(type="GateLossEncoderDecoder",
                 backbone=dict(type="ChannelBenchBasResNet50", total_iters=80000), ...)

`ChannelBenchBasResNet50` is `methods.batch_shaping`'s dilated BAS ResNet-50 (output stride 8) returning the
features of stages 2 to 5, as mmseg's ResNetV1c with `out_indices=(0, 1, 2, 3)` does, so PSPNet's
heads (`in_index=-1` for the decode head, `-2` for the auxiliary one) read the same stages. mmseg's
EncoderDecoder only sums its heads' losses; `GateLossEncoderDecoder` adds the backbone's batch-shaping
and L0 losses (`loss_gate_*`) at the curriculum position `iterations / total_iters`.

`examples/mmseg/check_registry.py` runs mmseg's own `pspnet_r50-d8_4xb2-40k_cityscapes-512x1024` config
with these two types (checked with mmsegmentation 1.2.2 and a source-built mmcv 2.1.0 on torch 2.14.1:
49.231M parameters, as `pspnet_bas_resnet50`; two training steps with `loss_gate_batch_shaping` and
`loss_gate_l0` in the log; evaluation). The tests check this module against a stand-in of mmseg's API.
"""

from __future__ import annotations

from torch import Tensor, nn

from methods.batch_shaping import dilated_bas_resnet50

BACKBONE = "ChannelBenchBasResNet50"
SEGMENTOR = "GateLossEncoderDecoder"


class GatedBackbone(nn.Module):
    """mmseg backbone: the dilated BAS ResNet-50, its stage outputs, and the curriculum position."""

    def __init__(
        self,
        in_channels: int = 3,
        out_indices=(0, 1, 2, 3),
        total_iters: int = 80000,
        init_cfg=None,
        **gate_kwargs,
    ):
        super().__init__()
        self.net = dilated_bas_resnet50(in_channels, **gate_kwargs)
        self.net.fc = nn.Identity()
        self.out_indices = tuple(out_indices)
        self.total_iters = total_iters
        self.iters = 0  # training forwards so far: the curriculum's clock

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.training:
            self.iters += 1
        stages = self.net(x)
        return tuple(stages[i] for i in self.out_indices)

    def progress(self) -> float:
        return min(self.iters / self.total_iters, 1.0)

    def aux_losses(self) -> dict[str, Tensor]:
        return self.net.aux_losses(self.progress())

    def init_weights(self) -> None:  # mmengine calls it; the weights are initialised at construction
        pass


def register() -> bool:
    """Register the backbone and the segmentor in mmseg's MODELS; False when mmseg is not installed."""
    try:
        from mmseg.models.segmentors import EncoderDecoder
        from mmseg.registry import MODELS
    except ImportError:
        return False

    class GateLossEncoderDecoder(EncoderDecoder):
        """mmseg's EncoderDecoder plus the gated backbone's own losses."""

        def loss(self, inputs, data_samples):
            losses = super().loss(inputs, data_samples)
            hook = getattr(self.backbone, "aux_losses", None)
            if hook is not None:
                losses.update({f"loss_gate_{name}": value for name, value in hook().items()})
            return losses

    if BACKBONE not in MODELS.module_dict:  # importing twice must not fail
        MODELS.register_module(name=BACKBONE, module=GatedBackbone)
        MODELS.register_module(name=SEGMENTOR, module=GateLossEncoderDecoder)
    return True


register()  # `custom_imports` imports this module: registering is what importing it is for
