"""One training step, SRN against Detectron2's RetinaNet: operators run, host syncs, time.

    python benchmarks/benchmark_train_step.py [--configs RetinaNet_mini.yaml SRN_mini.yaml]
        [--faces 10 200] [--size 256] [--batch 4] [--iters 5]

Each config's model takes the same batch (random face-like boxes, ``--faces``
per image) in this one process. The operators of one step's forward, losses
and backward (the optimizer's are the same for every model) are counted at
the dispatcher (``srn_d2.utils.dispatch_count``),
with those that make a GPU wait on the host by kind: ``host_read`` (``.item()``,
``int(tensor)``), ``data_shaped`` (``nonzero``), ``boolean_index`` (a mask
index or assignment), ``repeat_interleave`` without its output size,
``host_copy`` (a tensor built from Python data). Then the step is timed, the
configs in turns. Ratios are to the first config.
"""

from srn_d2.utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import argparse

import torch
from detectron2.utils.events import EventStorage

from srn_d2.apps.benchmark import Candidate
from srn_d2.utils.dispatch_count import SYNC_KINDS, DispatchCount
from srn_d2.utils.measure import format_table, interleaved_median_ms


def step_counts(candidate: Candidate) -> dict:
    """Operators and syncs of the model's part of a training step (forward, losses, backward),
    after one whole step to warm up; the optimizer's are the same code for every model."""
    candidate.train_step(amp=False)
    candidate.optimizer.zero_grad()
    with DispatchCount() as count:
        sum(candidate.model(candidate.batch).values()).backward()
    return {key: float(value) for key, value in count.summary().items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["RetinaNet_mini.yaml", "SRN_mini.yaml"],
        help="config names or files; ratios are to the first",
    )
    parser.add_argument(
        "--faces", nargs="+", type=int, default=[10, 200], help="faces per image, one table each"
    )
    parser.add_argument("--size", type=int, default=256, help="square training crops")
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument(
        "--iters", type=int, default=5, help="timed steps per config (median reported)"
    )
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    columns = ["config", "faces", "ops", "syncs", *SYNC_KINDS, "train_ms"]
    print(
        f"device: cpu, threads: {torch.get_num_threads()}, {args.batch} images of {args.size} px a step"
    )
    for faces in args.faces:
        candidates = [
            Candidate(c, [], (args.size, args.size), "cpu", args.batch, faces) for c in args.configs
        ]
        rows = []
        with EventStorage():
            for candidate in candidates:
                candidate.model.train()
                rows.append(
                    {
                        "config": candidate.row["config"],
                        "faces": str(faces),
                        **step_counts(candidate),
                    }
                )
            steps = [lambda c=c: c.train_step(amp=False) for c in candidates]
            for row, ms in zip(rows, interleaved_median_ms(steps, args.iters, 1)):
                row["train_ms"] = ms
        print(format_table(rows, columns, baseline=rows[0]))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
