"""The ``syncsde`` command: LightningCLI with ``predict`` (synchronized sampling) and ``fit`` (training recipes).

syncsde predict --config configs/wide.yaml [--output_dir DIR] [--overwrite true] [--trainer.devices 2 ...]
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from pathlib import Path

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from syncsde.errors import SyncSDEError
from syncsde.io import atomic_write
from syncsde.writer import SampleWriter


class SyncCLI(LightningCLI):
    @staticmethod
    def subcommands():
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "predict")}

    def add_arguments_to_parser(self, parser):
        parser.add_argument(
            "--output_dir",
            type=str | None,
            default=None,
            help="predict: folder for images, sidecars and manifest (default outputs/<task>)",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="predict: regenerate samples already in output_dir instead of skipping them",
        )

    def before_predict(self):
        cfg = self.config["predict"]
        task = getattr(self.model, "task_name", type(self.model).__name__.lower())
        out = Path(cfg.output_dir or f"outputs/{task}")
        dm = self.datamodule
        if hasattr(dm, "attach_output"):
            dm.attach_output(out, cfg.overwrite)
            if not dm.pending():
                print(
                    f"syncsde: all {len(dm.samples())} samples are already in {out}; nothing to do "
                    "(--overwrite true regenerates them)",
                    file=sys.stderr,
                )
                sys.exit(0)
        self.trainer.callbacks.append(SampleWriter(out))
        if self.trainer.is_global_zero:
            text = self._parser(self.subcommand).dump(cfg, skip_none=False)
            atomic_write(out / "config.yaml", lambda p: p.write_text(text))


def main(args=None) -> None:
    SyncSDEError.last = None
    try:
        SyncCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            seed_everything_default=False,
            trainer_defaults={"logger": False, "enable_model_summary": False},
            parser_kwargs={
                "exit_on_error": False,
                "description": "syncsde: diffusion synchronization (SyncSDE and baselines). "
                "`syncsde predict --config configs/tiny/wide.yaml` runs a task; `syncsde fit` runs a training recipe.",
            },
            args=args,
        )
    except SyncSDEError as e:
        fail(e)
    except Exception as e:  # jsonargparse wraps errors raised while instantiating the config's classes
        if SyncSDEError.last is not None and str(SyncSDEError.last) in str(e):
            fail(SyncSDEError.last)
        if isinstance(e, ArgumentError):
            fail(e)
        raise


def fail(error: BaseException) -> None:
    print(f"syncsde: error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
