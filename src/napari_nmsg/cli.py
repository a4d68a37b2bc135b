"""``nmsg``: the command line. Thin: parses options, drives engine generators with tqdm."""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ._version import __version__
from .batch.inputs import OUTPUT_FORMATS
from .batch.resume import sidecar_path
from .engine.config import DECLARED, PRESETS, SETTINGS, NMSGConfig
from .engine.events import Progress, run_events
from .engine.settings import Declared
from .errors import InputError, OutputError, SettingsError
from .io import TOMOGRAM_SUFFIXES, Tomogram, read_volume, write_mrc
from .provenance import voxel_size_note
from .zarr_io import parse_level

STAGE_NAMES = {
    "noise-patches": "noise patches",
    "noise-model": "noise model (GAN)",
    "train": "training",
    "validate": "validating",
    "denoise": "denoising",
}


class ProgressBars:
    """One tqdm bar per engine stage, with the latest metrics as postfix."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, event: object) -> None:
        if self.quiet or not isinstance(event, Progress):
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            desc = STAGE_NAMES.get(event.stage, event.stage)
            self.bar = tqdm(total=event.total, desc=desc, unit="step", dynamic_ncols=True)
        self.bar.total = event.total
        self.bar.update(event.step - self.bar.n)
        if event.metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in event.metrics.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error of ``nmsg``: argparse's default
    prints the whole usage block first."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(minimum: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse type that refuses values below ``minimum`` before anything runs."""

    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def level_option(text: str) -> str:
    """``--level``: a level number or a voxel size such as 8A, checked before anything runs."""
    try:
        parse_level(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_io_options(
    parser: argparse.ArgumentParser, *, output: bool = True, background: bool = True
) -> Any:
    """Which level of an OME-Zarr input to read, with ``background`` where the noise is to
    be learned (one mask fits one tomogram) and with ``output`` how to write; returns the
    option group."""
    group = parser.add_argument_group("input and output (not method settings)")
    group.add_argument(
        "--level", type=level_option, metavar="N|SIZE",
        help="OME-Zarr input: the level to read, by number or by voxel size (8A: the level "
        "nearest 8 Å) (default: 0)",
    )  # fmt: skip
    if background:
        group.add_argument(
            "--background", metavar="MASK",
            help="learn the noise only where this volume of the tomogram's shape is non-zero "
            "(ice or vacuum you marked, e.g. a napari Labels layer saved as .mrc/.tif) "
            "(default: found automatically)",
        )  # fmt: skip
    if not output:
        return group
    group.add_argument(
        "--levels", type=at_least(1), default=1, metavar="N",
        help="OME-Zarr output: pyramid levels, each 2x smaller than the one above (default: 1)",
    )  # fmt: skip
    group.add_argument(
        "--voxel-size", type=at_least(1e-3, float), metavar="Å",
        help="write this voxel size instead of the input's (default: the input's)",
    )  # fmt: skip
    return group


def describe_input(path: str, tomo: Tomogram, voxel_size: float | None) -> None:
    """Say which OME-Zarr level is read and where the voxel size written comes from."""
    level = tomo.metadata.get("ome_zarr")
    if level:
        print(f"input: level {level['level']} of {level['levels']} of {Path(path).name}")
    note = voxel_size_note(tomo.voxel_size, voxel_size)
    if note:
        print(note)


def flag_of(name: str) -> str:
    return DECLARED[name].setting.option(name)


# Config fields with a command-line flag; the flags default to None (not given).
CONFIG_OPTIONS = tuple(d.name for d in SETTINGS if d.setting.cli)


def _shown(value: Any, declared: Declared) -> str:
    if value is None:
        return declared.setting.auto
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _defaults(declared: Declared, presets: dict[str, NMSGConfig]) -> str:
    """ "(default: …)" from the presets, naming the presets that differ from fast's."""
    values = {name: getattr(config, declared.name) for name, config in presets.items()}
    fast = values.pop("fast")
    others = [f"{name} {_shown(v, declared)}" for name, v in values.items() if v != fast]
    unit = f" {declared.setting.unit}" if declared.setting.unit and fast is not None else ""
    return f"(default: {_shown(fast, declared)}{unit}" + "".join(f"; {o}" for o in others) + ")"


def add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "method settings (defaults come from --preset; with --model, inference settings not "
        "given here come from the model)"
    )
    group.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    presets = {name: NMSGConfig.preset(name) for name in PRESETS}
    for declared in SETTINGS:
        setting = declared.setting
        if not setting.cli:
            continue
        options: dict[str, Any] = {"dest": declared.name}
        options["help"] = f"{setting.help} {_defaults(declared, presets)}"
        if declared.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = declared.kind
            if setting.choices:
                options["choices"] = [v for v in setting.choices.values() if v is not None]
        group.add_argument(setting.option(declared.name), **options)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given explicitly on the command line: they override a saved model's."""
    return {n: getattr(args, n) for n in CONFIG_OPTIONS if getattr(args, n) is not None}


def config_from_args(args: argparse.Namespace) -> NMSGConfig:
    return NMSGConfig.preset(args.preset, **given_settings(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate_tomogram

    outdir = Path(args.outdir)
    if outdir.is_file() or (not outdir.exists() and outdir.suffix.lower() in TOMOGRAM_SUFFIXES):
        raise InputError(
            f"{outdir}: simulate writes noisy, target, even and odd .mrc into a folder; "
            "give a folder name, not a file"
        )
    outdir.mkdir(parents=True, exist_ok=True)
    shape = (args.size,) * 3
    sim = simulate_tomogram(shape, snr=args.snr, seed=args.seed or 0)
    voxel = (sim.voxel_size,) * 3
    for name in ("noisy", "target", "even", "odd"):
        write_mrc(outdir / f"{name}.mrc", getattr(sim, name), voxel)
    print(f"wrote noisy, target, even, odd .mrc ({args.size}³, SNR {args.snr}) to {outdir}")
    return 0


def cmd_learn_noise(args: argparse.Namespace) -> int:
    from ._api import read_background  # torch: imported by the commands that run the engine
    from .engine import iter_learn_noise

    tomo = read_volume(args.input, level=args.level)
    config = config_from_args(args)
    bars = ProgressBars(args.quiet)
    background = read_background(args.background, tomo)
    learned = run_events(iter_learn_noise(tomo.data, config, background), bars)
    bars.close()
    print(learned.patches.note)
    print(json.dumps(learned.fidelity, indent=2))
    if args.samples:
        write_mrc(
            args.samples,
            learned.generated_examples.reshape(-1, *learned.patches.patches.shape[2:]),
            protect=(args.input,),
        )
    return 0


def cmd_denoise(args: argparse.Namespace) -> int:
    from ._api import denoise_file
    from .engine import load_model

    started = time.perf_counter()
    # lazy (a header, or the store's metadata): the notes come before the long run
    describe_input(args.input, read_volume(args.input, level=args.level), args.voxel_size)
    bars = ProgressBars(args.quiet)
    model = load_model(args.model) if args.model else None
    _, quality = denoise_file(
        args.input, args.output, config_from_args(args), model,
        overrides=given_settings(args), on_event=bars, save_model=args.save_model,
        level=args.level, levels=args.levels, voxel_size=args.voxel_size,
        background=args.background,
    )  # fmt: skip
    bars.close()
    print(f"wrote {args.output} and its provenance {sidecar_path(Path(args.output)).name} in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    if quality is not None:
        print(f"quality: {quality.summary()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine import iter_run
    from .metrics import best_gaussian, psnr
    from .simulate import simulate_tomogram

    config = config_from_args(args)
    print(f"simulating a {args.size}³ tomogram at SNR {args.snr} ...")
    sim = simulate_tomogram((args.size,) * 3, snr=args.snr, seed=config.seed)
    voxel = (sim.voxel_size,) * 3
    bars = ProgressBars(args.quiet)
    started = time.perf_counter()
    denoised = run_events(iter_run(sim.noisy, config), bars).output
    bars.close()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - started
    gauss_psnr, sigma, _ = best_gaussian(sim.noisy, sim.target)
    for name, volume in [("noisy", sim.noisy), ("target", sim.target), ("denoised", denoised)]:
        write_mrc(outdir / f"{name}.mrc", volume, voxel)
    print(f"PSNR vs noiseless target (dB): noisy {psnr(sim.noisy, sim.target):.2f}, "
          f"oracle Gaussian (σ={sigma:.2f}) {gauss_psnr:.2f}, "
          f"NMSG {psnr(denoised, sim.target):.2f}  [{elapsed:.0f} s]")  # fmt: skip
    print(f"wrote noisy.mrc, target.mrc, denoised.mrc to {outdir}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import FAILED_EXIT_CODE, denoise_many

    inputs = list(args.inputs) + [f"@{name}" for name in args.list or ()]
    if args.voxel_size is not None:
        print(f"voxel size: writing {args.voxel_size:g} Å into every output, as given by "
              "--voxel-size")  # fmt: skip
    summary = denoise_many(
        inputs,
        args.outdir,
        config=config_from_args(args),
        model=args.model,
        overrides=given_settings(args),
        fit_on=args.fit_on,
        scheduler=args.scheduler,
        n_workers=args.workers,
        torch_threads=args.torch_threads,
        memory_limit=args.memory_limit,
        quiet=args.quiet,
        level=args.level,
        levels=args.levels,
        voxel_size=args.voxel_size,
        output_format=args.output_format,
        background=args.background,
    )
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts().items() if n)
    print(f"{counts} in {summary.wall_seconds:.1f} s; summary in {summary.outdir / 'summary.json'}")
    for item in summary.failed:
        print(f"nmsg: {item.status}: {item.input}: {item.error}", file=sys.stderr)
    return FAILED_EXIT_CODE if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nmsg", description="Self-supervised cryo-ET tomogram denoising (NMSG)."
    )
    parser.add_argument("--version", action="version", version=f"napari-nmsg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated tomogram with its ground truth")
    p.add_argument("outdir", help="folder for noisy/target/even/odd .mrc")
    p.add_argument("--size", type=at_least(16), default=64, help="edge in voxels (default: 64)")
    p.add_argument(
        "--snr", type=at_least(1e-3, float), default=0.1, help="projection SNR (default: 0.1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("learn-noise", help="fit a noise model and report its fidelity")
    p.add_argument("input", help="tomogram (.mrc/.rec/.map/.tif, or OME-Zarr .zarr)")
    p.add_argument("--samples", help="write generated noise patches to this .mrc")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_io_options(p, output=False)
    add_config_options(p)
    p.set_defaults(func=cmd_learn_noise)

    p = sub.add_parser("denoise", help="denoise a tomogram (fits a model unless --model)")
    p.add_argument("input", help="tomogram (.mrc/.rec/.map/.tif, or OME-Zarr .zarr)")
    p.add_argument(
        "-o", "--output", required=True, help="output .mrc, or .zarr for OME-Zarr (never the input)"
    )
    p.add_argument("--model", help="use this saved model instead of fitting one")
    p.add_argument("--save-model", help="save the fitted model here (.pt)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_io_options(p)
    add_config_options(p)
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser(
        "batch",
        help="denoise many tomograms on a Dask cluster (resumable)",
        description="Denoise many tomograms on a Dask cluster (local by default). Re-running "
        "skips finished outputs; a tomogram that fails is reported and the others go on "
        "(exit code 3 if any failed). summary.json / summary.csv go into OUTDIR.",
    )
    p.add_argument(
        "inputs", nargs="*", help="tomograms (.zarr too), globs ('tomos/*.mrc') or @list.txt"
    )
    p.add_argument("-o", "--outdir", required=True, help="output folder (created if needed)")
    p.add_argument("--list", action="append", metavar="FILE", help="file with one path per line")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--model", help="denoise with this saved model only (no training)")
    mode.add_argument(
        "--fit-on", type=int, metavar="N", help="fit one model on N tomograms, use it for all"
    )
    p.add_argument("--scheduler", help="address (tcp://HOST:PORT) or scheduler file of a cluster")
    p.add_argument(
        "--workers", type=int, help="local workers (default: one per GPU, or per core and 3 GiB)"
    )
    p.add_argument("--torch-threads", type=int, help="torch threads per task (default: auto)")
    p.add_argument("--memory-limit", help="per local worker, e.g. 8GB; 0 turns Dask's off")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    group = add_io_options(p, background=False)
    group.add_argument(
        "--background", metavar="TEMPLATE",
        help="each tomogram's background mask, named by a path with {stem} for the "
        "tomogram's name, relative to its folder unless absolute (e.g. '{stem}_ice.mrc'): "
        "its noise is learned only where the mask is non-zero (default: found automatically)",
    )  # fmt: skip
    group.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="mrc",
        help="mrc: the input's MRC suffix, else .mrc; zarr: OME-Zarr <name>.zarr (default: mrc)",
    )  # fmt: skip
    add_config_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("demo", help="simulate, denoise and score against the ground truth")
    p.add_argument("--outdir", default="nmsg-demo", help="where to write the .mrc files")
    p.add_argument(
        "--size", type=at_least(16), default=64, help="edge of the simulated cube (default: 64)"
    )
    p.add_argument(
        "--snr", type=at_least(1e-3, float), default=0.1, help="projection SNR (default: 0.1)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_config_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:  # named by the flags the user types
        print(f"nmsg: error: {exc.describe(flag_of)}", file=sys.stderr)
        return 2
    except (InputError, ValueError) as exc:
        print(f"nmsg: error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:
        print(f"nmsg: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nmsg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
