"""SRN's size ladder, from the real-time model to SRN R-50, in one table: the library
behind ``python -m srn_d2.tools.ladder``.

Each rung is a shipped WIDER FACE config, whose cost is measured at a VGA image
(parameters; GFLOPs counted by fvcore; milliseconds per image end to end,
an OpenCV image in and boxes out, of its ONNX export on onnxruntime with one
and with two threads), and its ``_mini`` twin, the same network trained from
scratch on mini_faces by :mod:`srn_d2.apps.study` over several seeds, whose AP
gives the rung's accuracy. Detectron2's RetinaNet on the rungs' backbones sits
beside them as the baseline, and SRN_mini (``make demo``'s model) as the
reference that the smallest rung's accuracy is held to.

Runs already in a results file (``results.json`` of this command or of
``srn_d2.tools.ablation``) are read rather than trained again, so that a
ladder can be trained in parts, in parallel processes, and put together.
"""

import json
import os
import tempfile
from typing import Dict, List, NamedTuple, Sequence, Tuple

import onnxruntime
from tabulate import tabulate

from ..errors import require
from ..utils.file_io import check_output_folder, write_text
from ..utils.measure import cpu_name, interleaved_median_ms
from .benchmark import Candidate
from .study import METRICS, difference, format_cell, read_results, train_and_evaluate

__all__ = [
    "Rung",
    "RUNGS",
    "BASELINES",
    "REFERENCE",
    "measure_costs",
    "ladder_report",
    "run_ladder",
]


class Rung(NamedTuple):
    label: str
    config_file: str  # the WIDER FACE config whose cost is measured
    model: str  # the study model (apps.study.DETECTORS) of its _mini twin
    baseline: str = ""  # the label of Detectron2's RetinaNet on its backbone, if the ladder has one


# Smallest first: the first rung is the real-time SRN, trained with more seeds.
RUNGS = (
    Rung(
        "SRN MobileNetV3-Small",
        "SRN_MobileNetV3Small_widerface.yaml",
        "SRN_MobileNetV3Small",
        "RetinaNet MobileNetV3-Small",
    ),
    Rung(
        "SRN MobileNetV3-Large",
        "SRN_MobileNetV3_widerface.yaml",
        "SRN_MobileNetV3",
        "RetinaNet MobileNetV3-Large",
    ),
    Rung("SRN R-50", "SRN_R_50_FPN_widerface.yaml", "SRN_R_50", "RetinaNet R-50"),
)
BASELINES = (
    Rung(
        "RetinaNet MobileNetV3-Small",
        "RetinaNet_MobileNetV3Small_widerface.yaml",
        "RetinaNet_MobileNetV3Small",
    ),
    Rung(
        "RetinaNet MobileNetV3-Large",
        "RetinaNet_MobileNetV3_widerface.yaml",
        "RetinaNet_MobileNetV3",
    ),
    Rung("RetinaNet R-50", "RetinaNet_R_50_FPN_widerface.yaml", "RetinaNet_R_50"),
)
REFERENCE = Rung("SRN_mini (make demo)", "SRN_mini.yaml", "SRN")

THREADS = (1, 2)
# The accuracy columns, from the study's metrics.
AP_COLUMNS = ("AP_easy", "AP_medium", "AP_hard", "AP_hard_IoU70")


def all_rows() -> Tuple[Rung, ...]:
    return (*RUNGS, *BASELINES, REFERENCE)


def select(labels: Sequence[str]) -> Tuple[Rung, ...]:
    """The rows named by ``--rungs`` (all of them when empty), in the ladder's order."""
    known = {row.label: row for row in all_rows()}
    for label in labels:
        require(
            label in known, "--rungs", label, f"names no row of the ladder; known: {list(known)}"
        )
    return tuple(row for row in all_rows() if not labels or row.label in labels)


def measure_costs(
    rows: Sequence[Rung],
    size: Tuple[int, int],
    iters: int,
    warmup: int = 2,
    any_size: bool = True,
) -> Dict[str, dict]:
    """Each row's parameters, GFLOPs and ONNX milliseconds per image with 1 and 2 threads at
    ``size`` (height, width), random weights (timing does not depend on them); exported for any
    size, or (``any_size`` False) for ``size`` only, as ``export --input-size``."""
    candidates = [Candidate(row.config_file, [], size, "cpu", 0, 0) for row in rows]
    costs = {
        row.label: {"params_M": c.row["params_M"], "GFLOPs": c.gflops()}
        for row, c in zip(rows, candidates)
    }
    with tempfile.TemporaryDirectory() as folder:
        for index, candidate in enumerate(candidates):
            candidate.export_onnx(os.path.join(folder, f"{index}.onnx"), any_size)
        for threads in THREADS:
            for row, candidate in zip(rows, candidates):
                # One session at a time, spinning as deployed (ONNXFaceDetector's default): with two
                # threads a worker that sleeps between the graph's ~300 small ops and is woken for
                # each costs the model about 15%; interleaved sessions' spinning would take each
                # other's cores.
                runner = candidate.onnx_runner(threads, spin_wait=True)
                costs[row.label][f"ms_{threads}"] = interleaved_median_ms([runner], iters, warmup)[
                    0
                ]
                del runner
    return costs


def seeds_of(row: Rung, seeds: int, smallest_seeds: int) -> List[int]:
    return list(range(1, 1 + (smallest_seeds if row == RUNGS[0] else seeds)))


def train_missing(
    rows: Sequence[Rung],
    runs: List[dict],
    seeds: int,
    smallest_seeds: int,
    output: str,
    opts: Sequence[str],
) -> List[dict]:
    """``runs`` with each row's missing seeds trained and appended; results.json rewritten after each run."""
    runs = list(runs)
    done = {(run["model"], run["seed"]) for run in runs}
    for row in rows:
        for seed in seeds_of(row, seeds, smallest_seeds):
            if (row.model, seed) in done:
                continue
            runs.append(train_and_evaluate(row.model, seed, output, opts).row)
            done.add((row.model, seed))
            write_text(os.path.join(output, "results.json"), json.dumps(runs, indent=2))
    return runs


def ladder_report(
    rows: Sequence[Rung],
    costs: Dict[str, dict],
    runs: List[dict],
    seeds: int,
    smallest_seeds: int,
    size: Tuple[int, int],
    iters: int,
    any_size: bool = True,
) -> str:
    """The ladder table, then each rung against its RetinaNet on hard AP at IoU 0.7; a row's
    accuracy is over its seeds (:func:`seeds_of`), whatever other seeds ``runs`` holds."""
    metrics = {key: (header, digits) for key, header, digits in METRICS}
    by_model: Dict[str, List[dict]] = {}
    for row in all_rows():
        wanted = seeds_of(row, seeds, smallest_seeds)
        by_model[row.model] = [
            run for run in runs if run["model"] == row.model and run["seed"] in wanted
        ]
    lines = []
    for row in rows:
        cost, model_runs = costs[row.label], by_model.get(row.model, [])
        cells = [
            format_cell([run[key] for run in model_runs if key in run], metrics[key][1])
            for key in AP_COLUMNS
        ]
        lines.append(
            [
                row.label,
                row.config_file,
                f"{cost['params_M']:.2f}",
                f"{cost['GFLOPs']:.2f}",
                *(f"{cost[f'ms_{threads}']:.1f}" for threads in THREADS),
                len(model_runs),
                *cells,
            ]
        )
    headers = [
        "model",
        "config",
        "params M",
        "GFLOPs",
        *(f"ms {t} core{'s' * (t > 1)}" for t in THREADS),
        "seeds",
        *(metrics[key][0] for key in AP_COLUMNS),
    ]
    height, width = size
    parts = [
        f"{cpu_name()}, onnxruntime {onnxruntime.__version__}; cost at {width}x{height}: GFLOPs by fvcore, ms per "
        f"image end to end (the ONNX export{'' if any_size else f' for {width}x{height} only (--input-size)'}, "
        f"an OpenCV image in, boxes out; median of {iters} runs, one session "
        "at a time). "
        "AP in % on mini_faces_val of each config's _mini twin trained from scratch, mean ± standard deviation "
        "over its seeds:",
        tabulate(lines, headers, tablefmt="github", disable_numparse=True),
    ]
    comparisons = []
    for row in rows:
        ours, theirs = by_model.get(row.model, []), by_model.get(_model_of(row.baseline), [])
        if len(ours) >= 2 and len(theirs) >= 2:
            diff, error = difference(
                [r["AP_hard_IoU70"] for r in ours], [r["AP_hard_IoU70"] for r in theirs]
            )
            verdict = (
                "SRN ahead"
                if diff > 2 * error
                else "RetinaNet ahead"
                if diff < -2 * error
                else "within 2 SE"
            )
            comparisons.append(
                [f"{row.label} - {row.baseline}", f"{diff:+.1f} ± {error:.1f}", verdict]
            )
    if comparisons:
        parts += [
            "",
            "Hard AP at IoU 0.7, each rung against Detectron2's RetinaNet on its backbone "
            "(difference of means ± standard error):",
            tabulate(
                comparisons,
                ["comparison", "mean ± SE", "measured"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    return "\n".join(parts)


def _model_of(label: str) -> str:
    return next((row.model for row in all_rows() if row.label == label), "")


def run_ladder(
    labels: Sequence[str],
    seeds: int,
    smallest_seeds: int,
    results: Sequence[str],
    output: str,
    size: Tuple[int, int],
    iters: int,
    opts: Sequence[str] = (),
    train: bool = True,
    any_size: bool = True,
) -> str:
    """Measure the cost of the rows ``labels`` names, train their missing runs (unless not
    ``train``: then a row's accuracy is over the runs there are, its seeds column says how
    many; timed as exported for any size or, ``any_size`` False, for ``size`` only), and write
    ladder.md and results.json (every run, read and trained) to ``output``;
    return the report."""
    require(seeds >= 1, "--seeds", seeds, "must be at least 1")
    require(smallest_seeds >= 1, "--smallest-seeds", smallest_seeds, "must be at least 1")
    require(iters >= 1, "--iters", iters, "must be at least 1")
    require(
        train or not opts,
        "overrides",
        list(opts),
        "apply to training runs, and --no-training trains none",
    )
    rows = select(labels)
    check_output_folder(output)
    own_results = os.path.join(output, "results.json")
    runs = read_results([own_results, *results] if os.path.isfile(own_results) else results)
    # Cost first: training afterwards cannot disturb the timings.
    costs = measure_costs(rows, size, iters, any_size=any_size)
    if train:
        runs = train_missing(rows, runs, seeds, smallest_seeds, output, opts)
    write_text(own_results, json.dumps(runs, indent=2))
    report = ladder_report(rows, costs, runs, seeds, smallest_seeds, size, iters, any_size)
    write_text(os.path.join(output, "ladder.md"), report + "\n")
    return report
