"""srn_d2 in Detectron2's LazyConfig system: loading ``.py`` configs, overriding them
from the command line, building what they describe, and the training loop behind
``train_net.py --config-file X.py`` (Detectron2's ``tools/lazyconfig_train_net.py``
with srn_d2's safe checkpoints, evaluators and multi-scale test).

A ``.py`` config is a Python program: loading it runs it, as running a script
does. Load only configs you trust. What srn_d2 adds is the checking: an
override of a key the config does not have, or a config key that its target
does not take, is a ConfigValueError naming the key, not a silent new key or a
TypeError deep inside ``instantiate``.
"""

from ..utils import quiet_import  # noqa: F401  (first: before anything imports Detectron2)
import logging
import os
import re
from typing import Any, List, Optional, Sequence

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checkpoint import SafeCheckpointer, load_inference_weights
from ..errors import ConfigValueError, require
from ..utils.file_io import check_run_folder
from .defaults import resolve_command_device
from .determinism import enable_deterministic_training
from .ema import insert_weight_average

__all__ = [
    "load_lazy_config",
    "instantiate_checked",
    "build_lazy_model",
    "do_test",
    "do_train",
    "main",
]

logger = logging.getLogger(__name__)

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")
_MISSING = re.compile(r"missing \d+ required (?:keyword-only |positional )?arguments?: (.+)")


def load_lazy_config(path: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``LazyConfig.load(path)`` with ``overrides`` (``key=value``) applied; an override
    whose key the config does not have is a ConfigValueError naming it."""
    require(os.path.isfile(path), "--config-file", path, "does not exist")
    cfg = LazyConfig.load(path)
    before = {}
    for override in overrides:
        require(
            "=" in override,
            "override",
            override,
            "LazyConfig overrides are key=value (e.g. train.max_iter=10)",
        )
        key = override.split("=", 1)[0].lstrip("+")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        known = (
            isinstance(node, DictConfig)
            and leaf in node
            or (isinstance(node, ListConfig) and leaf.isdigit() and int(leaf) < len(node))
        )
        require(
            known,
            "override",
            override,
            f"{path} has no key {key!r}; a typo would otherwise add a key nothing reads",
        )
        before[key] = OmegaConf.select(cfg, key)
    try:
        cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    except OverrideParseException as error:
        raise ConfigValueError(
            f"override: {str(error).splitlines()[0]} (in {list(overrides)}); values follow "
            "Hydra's override grammar, e.g. key=[1,2] or key='a string'"
        ) from None
    for key, old in before.items():
        _require_same_kind(key, old, OmegaConf.select(cfg, key))
    return cfg


def _require_same_kind(key: str, old: Any, new: Any) -> None:
    """A number stays a number (an int an int), a bool a bool: ``train.max_iter=abc`` would
    otherwise fail deep in the training loop with a TypeError that names no key."""
    if isinstance(old, bool):
        ok, kind = isinstance(new, bool), "true or false"
    elif isinstance(old, int):
        ok, kind = isinstance(new, int) and not isinstance(new, bool), "a whole number"
    elif isinstance(old, float):
        ok, kind = isinstance(new, (int, float)) and not isinstance(new, bool), "a number"
    else:
        return
    require(ok, key, new, f"must be {kind}, as the config's {old!r}")


def instantiate_checked(node: Any, name: str) -> Any:
    """``instantiate(node)``; a key its target does not take (or a required one it lacks) is a
    ConfigValueError naming the key's path under ``name`` and the target."""
    try:
        return instantiate(node)
    except TypeError as error:
        unexpected = _UNEXPECTED.search(str(error))
        missing = _MISSING.search(str(error))
        if not unexpected and not missing:
            raise
        if unexpected:
            paths = [p for p in _paths_of_key(node, unexpected.group(1), name)] or [
                unexpected.group(1)
            ]
            raise ConfigValueError(
                f"{paths[0]}: not an argument of the object it configures ({error})"
            ) from None
        raise ConfigValueError(
            f"{name}: an object lacks the required argument(s) {missing.group(1)} ({error})"
        ) from None


def _paths_of_key(node: Any, key: str, prefix: str) -> List[str]:
    """Every dotted path under ``prefix`` that ends in ``key`` in a config tree."""
    found = []
    if isinstance(node, (dict, DictConfig)):
        for child_key, child in node.items():
            path = f"{prefix}.{child_key}"
            if child_key == key:
                found.append(path)
            found += _paths_of_key(child, key, path)
    elif isinstance(node, (list, ListConfig)):
        for index, child in enumerate(node):
            found += _paths_of_key(child, key, f"{prefix}.{index}")
    return found


def _device(cfg, args=None) -> str:
    """``train.device`` through :func:`resolve_command_device`, which may move it to the CPU."""
    cfg.train.device = resolve_command_device(cfg.train.device, "train.device", args)
    return cfg.train.device


def check_device(args) -> str:
    """The device a ``.py`` config's ``train.device`` resolves to for this command line."""
    return _device(load_lazy_config(args.config_file, args.opts), args)


def build_lazy_model(cfg) -> torch.nn.Module:
    """``cfg.model`` built and moved to ``cfg.train.device``."""
    model = instantiate_checked(cfg.model, "model")
    return model.to(_device(cfg))


def _evaluator(cfg, folder: str):
    node = cfg.dataloader.evaluator
    node.output_dir = folder
    return instantiate_checked(node, "dataloader.evaluator")


def do_test(cfg, model) -> dict:
    """Evaluate ``model`` on ``cfg.dataloader.test``; with ``train.tta.enabled``, also with
    the authors' multi-scale test (result keys end in "_TTA")."""
    from ..modeling import SRNWithTTA

    output_dir = cfg.train.output_dir
    names = cfg.dataloader.test.dataset.names
    if not names:
        # As DATASETS.TEST () in a YAML config: training without evaluation.
        logger.info("dataloader.test.dataset.names is empty: no evaluation")
        return {}
    dataset = str(names)
    results = inference_on_dataset(
        model,
        instantiate_checked(cfg.dataloader.test, "dataloader.test"),
        _evaluator(cfg, os.path.join(output_dir, "inference", dataset)),
    )
    tta = cfg.train.get("tta", {})
    if tta and tta.get("enabled"):
        options = {k: v for k, v in tta.items() if k != "enabled"}
        base = model.module if hasattr(model, "module") else model
        tta_model = SRNWithTTA(
            model,
            max_dets=base.max_detections_per_image,
            input_format=cfg.dataloader.image_format,
            **options,
        )
        tta_results = inference_on_dataset(
            tta_model,
            instantiate_checked(cfg.dataloader.test, "dataloader.test"),
            _evaluator(cfg, os.path.join(output_dir, "inference_TTA", dataset)),
        )
        results.update({f"{key}_TTA": value for key, value in tta_results.items()})
    if comm.is_main_process():
        print_csv_format(results)
    return results


def _optimizer(cfg, model):
    cfg.optimizer.params.model = model
    clip = cfg.train.get("clip_gradients", {})
    if clip and clip.get("enabled"):
        from detectron2.config import CfgNode
        from detectron2.solver.build import maybe_add_gradient_clipping

        solver = CfgNode(
            {
                "SOLVER": {
                    "CLIP_GRADIENTS": {
                        "ENABLED": True,
                        "CLIP_TYPE": clip["clip_type"],
                        "CLIP_VALUE": clip["clip_value"],
                        "NORM_TYPE": clip["norm_type"],
                    }
                }
            }
        )
        cfg.optimizer._target_ = maybe_add_gradient_clipping(solver, cfg.optimizer._target_)
    return instantiate_checked(cfg.optimizer, "optimizer")


def do_train(args, cfg) -> None:
    """Detectron2's lazy training loop with srn_d2's SafeCheckpointer (safe weights, atomic saves)."""
    model = build_lazy_model(cfg)
    if cfg.train.get("deterministic"):
        enable_deterministic_training(
            model,
            cfg.train.device,
            "model.backbone.upsample_mode",
            cfg.train.get("cudnn_benchmark", False),
        )
    if cfg.train.device == "cpu":
        # As SRNTrainer: focal-loss gradients of easy negatives underflow to denormals, slow on CPUs.
        torch.set_flush_denormal(True)
        require(
            not cfg.train.amp.enabled,
            "train.amp.enabled",
            True,
            "Detectron2's AMPTrainer needs CUDA; on the CPU, train in float32",
        )
    optimizer = _optimizer(cfg, model)
    train_loader = instantiate_checked(cfg.dataloader.train, "dataloader.train")
    ddp = dict(cfg.train.ddp)
    if cfg.train.device == "cpu":
        ddp["device_ids"] = None
    model = create_ddp_model(model, **ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, train_loader, optimizer
    )
    checkpointer = SafeCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer_hooks = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate_checked(cfg.lr_multiplier, "lr_multiplier")),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process()
        else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(
            default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
        )
        if comm.is_main_process()
        else None,
    ]
    model_ema = cfg.train.get("model_ema", {})
    if model_ema and model_ema.get("enabled"):
        insert_weight_average(
            trainer_hooks, model, checkpointer, model_ema.get("decay"), "train.model_ema.decay"
        )
    trainer.register_hooks(trainer_hooks)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args) -> Optional[dict]:
    """One process's work for a ``.py`` config (``train_net.py`` launches it in each)."""
    cfg = load_lazy_config(args.config_file, args.opts)
    _device(cfg, args)
    check_run_folder(cfg.train.output_dir)
    default_setup(cfg, args)
    if args.eval_only:
        model = build_lazy_model(cfg)
        weights = cfg.train.init_checkpoint
        checkpointer = SafeCheckpointer(model, save_dir=cfg.train.output_dir)
        if args.resume and checkpointer.has_checkpoint():
            weights = checkpointer.get_checkpoint_file()
        load_inference_weights(model, weights, allow_random=args.allow_random_weights)
        return do_test(cfg, model)
    do_train(args, cfg)
    return None
