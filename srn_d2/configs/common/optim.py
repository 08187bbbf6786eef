"""The optimizers of srn_d2's recipes: SGD (the paper's) and AdamW with gradient clipping (the mini recipe).

``params.model`` is set to the model by the training loop before the optimizer is built.
"""

import torch
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=1e-3,
    weight_decay=1e-4,
)
