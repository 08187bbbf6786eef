"""Train or evaluate SRN, or a stock Detectron2 model on the same face data.

    python train_net.py --config-file configs/SRN_R_50_FPN_widerface.yaml --num-gpus 8
    python train_net.py --config-file configs/SRN_mini.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
    python train_net.py --config-file configs/SRN_mini.py train.max_iter=100 model.head.branch_channels=8

A ``.py`` config is a LazyConfig (``srn_d2.engine.lazy_config``; overrides ``key=value``);
it is a Python program and runs when loaded, so use only configs you trust. A
``.yaml`` config is read without running anything (overrides ``KEY VALUE``).
(``train_net.py`` is ``python -m srn_d2.tools.train_net``.)
"""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
from detectron2.engine import default_argument_parser, hooks, launch
from detectron2.evaluation import verify_results

from ..checkpoint import SafeCheckpointer, load_inference_weights
from ..engine import SRNTrainer, setup_cfg
from . import run_command


def main(args):
    """One process's work (Detectron2's ``launch`` runs it in each)."""
    cfg = setup_cfg(args.config_file, args.opts, args)
    if args.eval_only:
        model = SRNTrainer.build_model(cfg)
        weights = cfg.MODEL.WEIGHTS
        checkpointer = SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if args.resume and checkpointer.has_checkpoint():
            weights = checkpointer.get_checkpoint_file()
        load_inference_weights(model, weights, allow_random=args.allow_random_weights)
        results = SRNTrainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(SRNTrainer.test_with_TTA(cfg, model))
        verify_results(cfg, results)
        return results

    trainer = SRNTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="with --eval-only: evaluate even if MODEL.WEIGHTS is empty or leaves parameters random",
    )
    return parser


def run(argv=None) -> int:
    return run_command(_launch, argv)


def _launch(argv) -> int:
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    # A .py config is a LazyConfig (overrides key=value); anything else a YAML config (KEY VALUE).
    if args.config_file.endswith(".py"):
        from ..engine.lazy_config import check_device, main as lazy_main

        process_main = lazy_main
    else:
        process_main = main
    if args.num_gpus * args.num_machines > 1:
        # Checked here: raised in the spawned processes, the one-line error would come back as their tracebacks.
        if process_main is main:
            setup_cfg(args.config_file, args.opts, args, run_setup=False)
        else:
            check_device(args)
    launch(
        process_main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
