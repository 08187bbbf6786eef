"""SRN R-50 on WIDER FACE as the paper trains it: the LazyConfig twin of SRN_R_50_FPN_widerface.yaml.

A .py config is a Python program: loading it runs it, as running a script does. Load only
configs you trust; the YAML configs stay free of code.
"""

from .common.data.widerface import dataloader
from .common.models.srn import model
from .common.optim import SGD as optimizer
from .common.schedule import multi_step
from .common.train import train

train.max_iter = 52325
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.checkpointer.period = 5000
lr_multiplier = multi_step(train.max_iter, (40250, 48300), warmup_iters=1000)
