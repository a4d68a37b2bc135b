"""Settings are declared once on NMSGConfig; the CLI, the widget form and the batch resume
key are generated from that declaration."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from napari_nmsg.cli import CONFIG_OPTIONS, build_parser, config_from_args, given_settings
from napari_nmsg.engine import PRESETS, NMSGConfig
from napari_nmsg.engine.config import (
    DECLARED,
    INFERENCE_FIELDS,
    NOISE_MODELS,
    PAIRINGS,
    RUN_FIELDS,
    SETTINGS,
    InferenceSettings,
    MachineSettings,
    NoiseSettings,
    TrainingSettings,
)
from napari_nmsg.engine.settings import Setting, declared, option
from napari_nmsg.errors import SettingsError

README = Path(__file__).resolve().parents[1] / "README.md"


def _denoise_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["denoise"]._actions}


def test_every_field_is_declared_and_groups_give_the_model_carried_settings():
    assert [d.name for d in SETTINGS] == [f.name for f in fields(NMSGConfig)]
    assert set(INFERENCE_FIELDS) == {"inference_pairs", "tile", "overlap", "amp", "wedge_axis"}
    assert set(RUN_FIELDS) == {"device", "tile_batch"}
    assert NOISE_MODELS == ("gan", "spectral") and "r2r" in PAIRINGS

    from dataclasses import dataclass

    @dataclass
    class Undeclared:
        GROUP = "general"
        declared_one: int = option(1, label="x", help="y")
        plain: int = 2

    with pytest.raises(TypeError, match="plain has no declared setting"):
        declared(Undeclared)


def test_cli_flags_are_generated_with_their_defaults_and_choices():
    actions = _denoise_actions()
    assert set(CONFIG_OPTIONS) == {d.name for d in SETTINGS if d.setting.cli}
    for d in SETTINGS:
        if not d.setting.cli:
            assert d.name not in actions
            continue
        action = actions[d.name]
        assert action.default is None  # not given: the preset or the model decides
        assert action.help.startswith(d.setting.help) and "(default: " in action.help
    assert actions["noise_model"].choices == list(NOISE_MODELS)
    assert actions["pairing"].choices == list(PAIRINGS)
    assert actions["wedge_axis"].choices == [0, 1, 2]
    assert "--steps" in actions["train_steps"].option_strings
    assert "(default: 1600; balanced 2800; quality 4000)" in actions["train_steps"].help
    assert "(default: chosen by the validation)" in actions["base_sigma"].help
    assert "(default: on)" in actions["gaussian_fallback"].help


def test_only_the_flags_given_are_settings_and_they_reach_the_config():
    parser = build_parser()
    base = ["denoise", "a.mrc", "-o", "b.mrc"]
    assert given_settings(parser.parse_args(base)) == {}
    args = parser.parse_args(
        [*base, "--steps", "7", "--no-gaussian-fallback", "--base-sigma", "1.5", "--amp"]
    )
    assert given_settings(args) == {
        "train_steps": 7, "gaussian_fallback": False, "base_sigma": 1.5, "amp": True,
    }  # fmt: skip
    config = config_from_args(args)
    assert (config.train_steps, config.gaussian_fallback, config.base_sigma) == (7, False, 1.5)
    assert config.crop == NMSGConfig.preset("fast").crop


def test_readme_names_only_options_that_exist():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    known = {
        option
        for command in sub.choices.values()
        for action in command._actions
        for option in action.option_strings
    }
    benchmarks = README.parent / "benchmarks"
    for script in benchmarks.glob("*.py"):  # the benchmark scripts' own flags
        known |= set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", script.read_text()))
    known |= {"--scheduler-file", "--nthreads", "--gres"}  # dask's and SLURM's, for clusters
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README.read_text()))
    assert "--inference-pairs" in named
    assert named - known == set()


def test_presets_use_declared_fields_only():
    names = {d.name for d in SETTINGS}
    for preset in PRESETS.values():
        assert set(preset) <= names


def test_a_setting_names_its_flag():
    assert Setting("Steps", "h", flag="--steps").option("train_steps") == "--steps"
    assert Setting("Crop", "h").option("train_steps") == "--train-steps"


def test_each_group_is_a_typed_settings_class_and_declares_its_fields():
    groups = {
        InferenceSettings: INFERENCE_FIELDS,
        MachineSettings: RUN_FIELDS,
        NoiseSettings: ("patch_size", "max_patches", "noise_model", "separable_cap", "gan_steps",
                        "gan_batch", "gan_width"),
    }  # fmt: skip
    for group, names in groups.items():
        assert tuple(f.name for f in fields(group)) == names
        assert all(DECLARED[n].setting.group == group.GROUP for n in names)
        assert isinstance(NMSGConfig(), group)
    assert {d.setting.group for d in SETTINGS} == {
        "general", "machine", "noise", "training", "inference", "preview",
    }  # fmt: skip
    assert isinstance(NMSGConfig(), TrainingSettings) and NMSGConfig().multiple == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_steps": 0}, "train_steps=0 must be at least 1"),
        ({"overlap": -1}, "overlap=-1 must be at least 0"),
        ({"base_sigma": 9.0}, "base_sigma=9.0 must be at most 8"),
        ({"tile": 8}, "tile=8 must be at least 16"),
        ({"noise_model": "vae"}, "noise_model must be one of gan, spectral, not 'vae'"),
        ({"wedge_axis": 3}, "wedge_axis must be one of None, 0, 1, 2, not 3"),
        ({"crop": 18}, "crop=18 must be a multiple of 4"),
    ],
)
def test_declared_ranges_and_choices_are_enforced_with_the_setting_named(changes, message):
    with pytest.raises(SettingsError) as caught:
        NMSGConfig(**changes)
    assert str(caught.value).startswith(message)
    # a front end names the setting its own way
    flag = DECLARED[next(iter(changes))].setting.option(next(iter(changes)))
    assert caught.value.describe(lambda name: DECLARED[name].setting.option(name)).startswith(
        message.replace(next(iter(changes)), flag, 1)
    )


def test_auto_values_pass_the_range_checks():
    config = NMSGConfig(base_sigma=None, amp=None, wedge_axis=None)
    assert config.base_sigma is None
