"""Reading YAML configs: one resolution of the _BASE_ chain, safe loading, errors naming the file."""

import glob
import os

import pytest
from fvcore.common.config import CfgNode as FvcoreCfgNode
from hypothesis import given, settings
from hypothesis import strategies as st

from srn_d2 import model_zoo
from srn_d2.config import get_srn_cfg
from srn_d2.engine import load_config_file, merge_config_file, setup_cfg
from srn_d2.errors import ConfigValueError

SHIPPED = sorted(
    glob.glob(os.path.join(os.path.dirname(model_zoo.get_config_file("Base-SRN.yaml")), "*.yaml"))
)


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_configs_load_as_fvcore_loads_them(path):
    # fvcore's own loader, safe mode, is the independent reference for the merge of the _BASE_ chain.
    assert load_config_file(path) == FvcoreCfgNode.load_yaml_with_base(path, allow_unsafe=False)


def test_later_bases_then_the_file_win(tmp_path):
    (tmp_path / "a.yaml").write_text("SEED: 1\nSOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\n")
    (tmp_path / "b.yaml").write_text("SEED: 2\nSOLVER:\n  MAX_ITER: 20\n")
    (tmp_path / "c.yaml").write_text('_BASE_: ["a.yaml", "b.yaml"]\nSOLVER:\n  BASE_LR: 0.25\n')
    cfg = get_srn_cfg()
    merge_config_file(cfg, str(tmp_path / "c.yaml"))
    assert (cfg.SEED, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR) == (2, 20, 0.25)


def _refused(path, pattern):
    with pytest.raises(ConfigValueError, match=pattern):
        setup_cfg(str(path))


def test_a_python_tag_anywhere_in_the_chain_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "evil.yaml").write_text(
        f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    (tmp_path / "top.yaml").write_text('_BASE_: "evil.yaml"\n')
    _refused(tmp_path / "top.yaml", r"evil.yaml, line 1: not a safe YAML config")
    assert not marker.exists()


def test_a_url_base_is_refused_and_the_look_alike_file_never_read(tmp_path):
    # fvcore would read "x://base.yaml" as a relative file, "<dir>/x:/base.yaml"; a check that
    # resolved it as a URL would have looked elsewhere. Here there is one resolution: refused.
    marker = tmp_path / "code_ran"
    (tmp_path / "x:").mkdir()
    (tmp_path / "x:" / "base.yaml").write_text(
        f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    (tmp_path / "top.yaml").write_text('_BASE_: "x://base.yaml"\n')
    _refused(
        tmp_path / "top.yaml",
        r"top.yaml: _BASE_ = 'x://base.yaml': config bases are read from files only",
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("", r"bad.yaml is empty"),
        ("- 1\n- 2\n", r"bad.yaml is a YAML list, not a mapping"),
        ("_BASE_: 5\n", r"bad.yaml: _BASE_ = 5: needs a file name"),
        ('_BASE_: "missing.yaml"\n', r"missing.yaml does not exist"),
        (
            "MODEL:\n  SRN:\n    NO_SUCH_KEY: 1\n",
            r"bad.yaml: Non-existent config key: MODEL.SRN.NO_SUCH_KEY",
        ),
        (
            "MODEL:\n  SRN:\n    STC_NEG_THRESH: 0.99\n",
            r"bad.yaml: .*MODEL.SRN.STC_NEG_THRESH.*STC_MIN_FACE_PROB",
        ),
        ("SEED: [1, 2]\n", r"bad.yaml: .*SEED"),
        ("SEED: 1\n  bad indent: [\n", r"bad.yaml, line \d+: not a safe YAML config"),
    ],
)
def test_bad_config_files_name_the_file(tmp_path, content, pattern):
    (tmp_path / "bad.yaml").write_text(content)
    _refused(tmp_path / "bad.yaml", pattern)


def test_a_base_cycle_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    _refused(tmp_path / "a.yaml", r"_BASE_ cycle: .*a.yaml -> .*b.yaml -> .*a.yaml")


def test_overrides_come_in_pairs_and_name_unknown_keys():
    config = model_zoo.get_config_file("SRN_mini.yaml")
    with pytest.raises(ConfigValueError, match="'SEED' has no value"):
        setup_cfg(config, ["SOLVER.MAX_ITER", "5", "SEED"])
    with pytest.raises(ConfigValueError, match="config override: Non-existent key: MODEL.NOPE"):
        setup_cfg(config, ["MODEL.NOPE", "1"])
    assert setup_cfg(config, ["SOLVER.MAX_ITER", "5"]).SOLVER.MAX_ITER == 5


def test_an_option_after_the_overrides_is_named_not_swallowed():
    config = model_zoo.get_config_file("SRN_mini.yaml")
    with pytest.raises(ConfigValueError, match="option --resume comes after the config overrides"):
        setup_cfg(config, ["SOLVER.MAX_ITER", "5", "--resume"])
    with pytest.raises(ConfigValueError, match="option --num-gpus comes after"):
        setup_cfg(config, ["SOLVER.MAX_ITER", "5", "--num-gpus", "2"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_load_as_a_mapping_or_fail_naming_the_file(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("any") / "any.yaml"
    path.write_bytes(content)
    try:
        loaded = load_config_file(str(path))
    except ConfigValueError as error:
        assert "any.yaml" in str(error)
    else:
        assert isinstance(loaded, dict)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """Nested aliases of a few hundred bytes would expand to gigabytes of config nodes."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)
    ]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nSEED: 1\n")
    with pytest.raises(
        ConfigValueError,
        match=r"bomb.yaml, line \d+: .*aliases \(\*name\) expand to more than 100,",
    ):
        setup_cfg(str(tmp_path / "bomb.yaml"))


def test_a_config_detectron2_dumped_with_aliases_loads(tmp_path):
    """cfg.dump() writes a value used twice once, with an alias: OUTPUT_DIR/config.yaml must load again."""
    cfg = get_srn_cfg()
    cfg.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_MEAN
    dumped = cfg.dump()
    assert "&id001" in dumped and "*id001" in dumped
    (tmp_path / "config.yaml").write_text(dumped)
    assert setup_cfg(str(tmp_path / "config.yaml")).MODEL.PIXEL_STD == cfg.MODEL.PIXEL_MEAN


def test_a_base_naming_detectron2s_own_lazy_config_is_named(tmp_path):
    import detectron2

    configs = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs")
    lazy = os.path.join(configs, "common", "models", "retinanet.py")
    (tmp_path / "top.yaml").write_text(f'_BASE_: "{lazy}"\n')
    with pytest.raises(ConfigValueError, match=r"retinanet.py.*not a safe YAML config"):
        setup_cfg(str(tmp_path / "top.yaml"))
