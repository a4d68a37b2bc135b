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
    INFERENCE_FIELDS,
    NOISE_MODELS,
    PAIRINGS,
    RUN_FIELDS,
    SETTINGS,
)
from napari_nmsg.engine.settings import Setting, declared, option

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
        declared_one: int = option(1, group="general", label="x", help="y")
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
    assert "(default: 2400; balanced 2000; quality 3000)" in actions["train_steps"].help
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
    assert Setting("training", "Steps", "h", flag="--steps").option("train_steps") == "--steps"
    assert Setting("training", "Crop", "h").option("train_steps") == "--train-steps"
