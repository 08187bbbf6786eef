"""What the training loop (``train_net.py`` with a ``.py`` config) reads beside the model, data and optimizer."""

train = dict(
    output_dir="./output",
    init_checkpoint="",  # MODEL.WEIGHTS: loaded safely (no code from the file runs)
    max_iter=52325,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=0,  # 0: evaluate once, after training
    log_period=20,
    device="cuda",
    seed=-1,
    # DETERMINISTIC: bit-for-bit repeatable training, or a stop at start naming the key to change.
    deterministic=False,
    # MODEL_EMA.*: the weights' moving average, which the model takes after the last iteration.
    model_ema=dict(enabled=False, decay=0.99),
    clip_gradients=dict(enabled=False, clip_type="value", clip_value=1.0, norm_type=2.0),
    # The authors' multi-scale test (TEST.AUG.*): run after training / with --eval-only when enabled.
    tta=dict(
        enabled=False,
        max_size=2100,
        shrink=0.5,
        enlarge_base=1.5,
        flip=True,
        shrink_min_box=30.0,
        enlarge_max_box=100.0,
        vote_iou=0.5,
        inclusive_pixel_boxes=False,
    ),
)
