"""SRN on mini_faces at CPU scale (make demo): the LazyConfig twin of SRN_mini.yaml. The
R-50 model of SRN_R_50_FPN_widerface.py with its bottom-up network, widths and norms swapped
by assignment; the recipe (data, AdamW, schedule) of Base-mini.yaml.

Load only configs you trust: a .py config runs when loaded.
"""

from detectron2.config import LazyCall as L

from srn_d2.modeling.mini_resnet import mini_resnet

from .SRN_R_50_FPN_widerface import dataloader, model, train
from .common.optim import AdamW as optimizer
from .common.schedule import multi_step

model.backbone.bottom_up = L(mini_resnet)(
    in_channels=3,
    stem_channels=32,
    widths=[32, 64, 128, 256],
    blocks_per_stage=[1, 1, 1, 1],
    norm="GN",
)
model.backbone.out_channels = 64
model.backbone.c6_channels = 128
model.backbone.c7_channels = 64
model.backbone.norm = "GN"
model.head.branch_channels = 16
model.head.norm = "GN"
model.head.recompute_rfe = False

dataloader.train.dataset.names = "mini_faces_train"
dataloader.test.dataset.names = "mini_faces_val"
dataloader.train.mapper.augmentations[-1].shape = (256, 256)
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.lr = 0.001
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=10.0, norm_type=2.0)
train.max_iter = 300
lr_multiplier = multi_step(train.max_iter, (240, 285), warmup_iters=30)
train.init_checkpoint = ""
train.checkpointer.period = 150
train.device = "cpu"
train.seed = 1
train.output_dir = "output/SRN_mini"
