"""Detectron2's RetinaNet on mini_faces at CPU scale: the LazyConfig twin of RetinaNet_mini.yaml
(the same mini ResNet, recipe and anchors as SRN_mini.py).

Load only configs you trust: a .py config runs when loaded.
"""

from detectron2.layers import ShapeSpec

from .RetinaNet_R_50_FPN_widerface import model
from .SRN_mini import dataloader, lr_multiplier, optimizer, train
from .SRN_mini import model as srn_mini

model.backbone.bottom_up = srn_mini.backbone.bottom_up
model.backbone.out_channels = 64
model.backbone.norm = "GN"
model.backbone.top_block.in_channels = 256
model.head.input_shape = [ShapeSpec(channels=64)] * 6
model.head.conv_dims = [64, 64, 64, 64]
model.head.norm = "GN"
train.output_dir = "output/RetinaNet_mini"
