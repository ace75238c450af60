"""The gated backbone inside mmsegmentation's own PSPNet Cityscapes config: build, two training steps, eval.

Needs mmsegmentation 1.2.2 and mmcv 2.1.0 (a source build for this torch, see
`integrations/mmseg_registry.py`); not part of the tests. Run: `python examples/mmseg/check_registry.py`.
"""

import os
import time

import mmseg
import torch
from mmengine import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import integrations.mmseg_registry as reg

register_all_modules()
print("registered:", reg.register())
path = os.path.join(
    os.path.dirname(mmseg.__file__), ".mim/configs/pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py"
)
cfg = Config.fromfile(path)
cfg.model.type = reg.SEGMENTOR
cfg.model.pretrained = None
cfg.model.backbone = dict(type=reg.BACKBONE, total_iters=10)
model = revert_sync_batchnorm(MODELS.build(cfg.model))
model.init_weights()
print(
    type(model).__name__,
    type(model.backbone).__name__,
    f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f}M params",
)
torch.manual_seed(0)
h, w = 128, 256
inputs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(2)]
samples = []
for _ in range(2):
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, h, w)))
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    samples.append(s)
# the config's data preprocessor pads every image to its 512x1024 crop size
data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
model.train()
for step in range(2):
    t = time.perf_counter()
    losses = model(**data, mode="loss")
    loss, log = model.parse_losses(losses)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: {time.perf_counter() - t:.2f} s", {k: round(float(v), 4) for k, v in log.items()})
    assert {"loss_gate_batch_shaping", "loss_gate_l0", "decode.loss_ce", "aux.loss_ce"} <= set(log), sorted(
        log
    )
print("backbone iters", model.backbone.iters, "progress", model.backbone.progress())
model.eval()
with torch.no_grad():
    out = model(data["inputs"], data["data_samples"], mode="tensor")
print("eval tensor", tuple(out.shape))
