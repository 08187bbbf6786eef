"""MODEL_EMA: the weights' moving average, its start, its checkpoint and its hand-over."""

import re
from types import SimpleNamespace

import pytest
import torch

from srn_d2.engine.ema import CHECKPOINT_KEY, WeightAverageHook
from srn_d2.errors import ConfigValueError
from srn_testing import tiny_srn_cfg


def _scalar_model(value):
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _train(hook, model, weights, max_iter, start_iter=0):
    """Give the model each of ``weights`` in turn, as iterations start_iter, start_iter + 1, ... would."""
    hook.trainer = SimpleNamespace(iter=start_iter, max_iter=max_iter)
    seen = []
    for i, value in enumerate(weights):
        hook.trainer.iter = start_iter + i
        with torch.no_grad():
            model.weight.fill_(value)
        hook.after_step()
        seen.append((model.weight.item(), hook.average_state()["weight"].item()))
    return seen


def test_average_starts_after_the_first_iteration_and_reaches_the_model_after_the_last():
    model = _scalar_model(-100.0)  # the initialization: it must carry no weight
    hook = WeightAverageHook(model, decay=0.5)
    seen = _train(hook, model, [1.0, 2.0, 3.0], max_iter=3)
    # Worked by hand: 1; 0.5 * 1 + 0.5 * 2 = 1.5; 0.5 * 1.5 + 0.5 * 3 = 2.25.
    assert [average for _, average in seen] == [1.0, 1.5, 2.25]
    # The model keeps the weights it trains until the last iteration, then takes the average.
    assert [weight for weight, _ in seen] == [1.0, 2.0, 2.25]


def test_resumed_average_goes_on_from_the_checkpoint():
    model = _scalar_model(0.0)
    hook = WeightAverageHook(model, decay=0.75)
    hook.load_average({"weight": torch.tensor([[10.0]])})
    seen = _train(hook, model, [2.0, 6.0], max_iter=10, start_iter=5)
    # 0.75 * 10 + 0.25 * 2 = 8; 0.75 * 8 + 0.25 * 6 = 7.5; not restarted at the model's 2.
    assert [average for _, average in seen] == [8.0, 7.5]
    assert [weight for weight, _ in seen] == [2.0, 6.0]


def test_decay_zero_is_the_last_weights():
    model = _scalar_model(0.0)
    seen = _train(WeightAverageHook(model, decay=0.0), model, [4.0, -3.0], max_iter=2)
    assert seen == [(4.0, 4.0), (-3.0, -3.0)]


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5, float("nan"), "0.9"])
def test_bad_decay_names_the_key(decay):
    with pytest.raises(ConfigValueError, match=r"MODEL_EMA\.DECAY = .*0 <= decay < 1"):
        WeightAverageHook(_scalar_model(0.0), decay=decay)


def _ema_trainer(tmp_path, datasets, monkeypatch, max_iter, decay=0.5):
    from srn_d2.engine import SRNTrainer

    monkeypatch.setenv("SRN_DATASETS", datasets)
    cfg = tiny_srn_cfg()
    cfg.merge_from_list(
        [
            "MODEL_EMA.ENABLED",
            "True",
            "MODEL_EMA.DECAY",
            str(decay),
            "DATASETS.TRAIN",
            "('mini_faces_train',)",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.SQUARE_SIZE_TRAIN",
            "128",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.OPTIMIZER",
            "AdamW",
            "SOLVER.BASE_LR",
            "0.01",
            "SOLVER.MAX_ITER",
            str(max_iter),
            "SOLVER.STEPS",
            "()",
            "SOLVER.WARMUP_ITERS",
            "0",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    return SRNTrainer(cfg)


def _checkpoint(tmp_path, name):
    return torch.load(tmp_path / "out" / f"{name}.pth", weights_only=True)


def test_trainer_checkpoints_the_average_and_ends_on_it(tmp_path, mini_faces_root, monkeypatch):
    trainer = _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=3)
    trainer.resume_or_load(resume=False)
    trainer.train()
    first, second, final = (
        _checkpoint(tmp_path, n) for n in ("model_0000000", "model_0000001", "model_final")
    )
    # Saved once, under model_ema: not again among the trainer's hooks, where no check would read it.
    assert not any("WeightAverage" in name for name in first["trainer"].get("hooks", {}))
    names = [k for k, v in first["model"].items() if v.is_floating_point()]
    assert len(names) > 50
    for name in names:
        # After iteration 0 the average is that iteration's weights; after 1 it is halfway to them.
        torch.testing.assert_close(
            first[CHECKPOINT_KEY][name], first["model"][name], rtol=0, atol=0
        )
        expected = 0.5 * first["model"][name] + 0.5 * second["model"][name]
        torch.testing.assert_close(second[CHECKPOINT_KEY][name], expected, rtol=1e-6, atol=1e-7)
        assert torch.equal(final["model"][name], final[CHECKPOINT_KEY][name])
    trained = [n for n in names if not torch.equal(first["model"][n], second["model"][n])]
    assert len(trained) > 50
    assert any(not torch.equal(second[CHECKPOINT_KEY][n], second["model"][n]) for n in trained)
    # What the model holds after training is what it saved: the average.
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, final["model"][name])


def test_trainer_resumes_the_average(tmp_path, mini_faces_root, monkeypatch):
    _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=2).train()
    saved = _checkpoint(tmp_path, "model_final")[CHECKPOINT_KEY]
    resumed = _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=4)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    average = next(h for h in resumed._hooks if isinstance(h, WeightAverageHook))
    assert all(torch.equal(v, saved[k]) for k, v in average.average_state().items())


def test_weights_loaded_to_fine_tune_do_not_restore_an_average(
    tmp_path, mini_faces_root, monkeypatch
):
    _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=2).train()
    trainer = _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=4)
    trainer.cfg.defrost()
    trainer.cfg.MODEL.WEIGHTS = str(tmp_path / "out" / "model_final.pth")
    trainer.resume_or_load(resume=False)
    average = next(h for h in trainer._hooks if isinstance(h, WeightAverageHook))
    assert trainer.start_iter == 0 and not average.started


def _damage_average(tmp_path, name, damage):
    path = tmp_path / "out" / f"{name}.pth"
    checkpoint = torch.load(path, weights_only=True)
    damage(checkpoint)
    torch.save(checkpoint, path)


def _nan_average(checkpoint):
    key = next(k for k, v in checkpoint[CHECKPOINT_KEY].items() if v.is_floating_point())
    checkpoint[CHECKPOINT_KEY][key] = torch.full_like(checkpoint[CHECKPOINT_KEY][key], float("nan"))


def _mis_shaped_average(checkpoint):
    key = next(k for k, v in checkpoint[CHECKPOINT_KEY].items() if v.dim() == 4)
    checkpoint[CHECKPOINT_KEY][key] = checkpoint[CHECKPOINT_KEY][key][:1]


@pytest.mark.parametrize(
    "damage, message",
    [
        (_nan_average, "model_ema.*holds NaN or infinity"),
        (_mis_shaped_average, "model_ema"),
        (lambda c: c.__setitem__(CHECKPOINT_KEY, [1, 2]), "model_ema holds a list"),
    ],
    ids=["nan", "mis_shaped", "a_list"],
)
def test_a_damaged_average_falls_back_to_the_checkpoint_before(
    tmp_path, mini_faces_root, monkeypatch, caplog, damage, message
):
    """A NaN average would hand NaN weights to model_final.pth; resuming refuses the damaged last
    checkpoint, names it, and goes on from the one before."""
    _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=3).train()
    _damage_average(tmp_path, "model_final", damage)
    resumed = _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=4)
    resumed.resume_or_load(resume=True)
    assert (
        re.search(message, caplog.text) and "resuming from the previous checkpoint" in caplog.text
    )
    # The periodic checkpoint of the last iteration, written beside model_final.pth.
    assert resumed.start_iter == 3
    average = next(h for h in resumed._hooks if isinstance(h, WeightAverageHook))
    saved = _checkpoint(tmp_path, "model_0000002")[CHECKPOINT_KEY]
    assert all(torch.equal(v, saved[k]) for k, v in average.average_state().items())


def test_resuming_without_an_average_says_it_starts_again(
    tmp_path, mini_faces_root, monkeypatch, caplog
):
    _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=2).train()
    _damage_average(tmp_path, "model_final", lambda c: c.pop(CHECKPOINT_KEY))
    resumed = _ema_trainer(tmp_path, mini_faces_root, monkeypatch, max_iter=3)
    resumed.resume_or_load(resume=True)
    resumed.train()
    assert "holds no model_ema: the weights' moving average starts again" in caplog.text
    final = _checkpoint(tmp_path, "model_final")
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
