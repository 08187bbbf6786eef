#!/usr/bin/env python
"""Train or evaluate SRN, or a stock Detectron2 model on the same face data: see
``python train_net.py --help`` (srn_d2.tools.train_net)."""

from srn_d2.tools.train_net import run

if __name__ == "__main__":
    raise SystemExit(run())
