"""The `pruneyolo` command line: one click group whose commands are imported only when they run."""

from __future__ import annotations

import importlib
import sys

import click

from pruneyolo import __version__
from pruneyolo.errors import ArgumentError, PruneyoloError, printable

# command name -> "module:attribute"; each module imports its heavy libraries inside the command
COMMANDS = {
    "import": "pruneyolo.cli.yolov5:import_command",
    "inspect": "pruneyolo.cli.model:inspect",
    "codegen": "pruneyolo.cli.model:codegen",
    "convert": "pruneyolo.cli.model:convert",
    "bench": "pruneyolo.cli.bench:bench_command",
    "profile": "pruneyolo.cli.profile:profile_command",
    "run": "pruneyolo.cli.run:run",
    "devices": "pruneyolo.cli.run:devices",
    "score": "pruneyolo.cli.run:score",
    "prune": "pruneyolo.cli.prune:prune_command",
    "compare": "pruneyolo.cli.prune:compare_command",
    "gammas": "pruneyolo.cli.prune:gammas_command",
    "synth": "pruneyolo.cli.synth:synth",
    "train": "pruneyolo.cli.train:train_command",
    "eval": "pruneyolo.cli.train:eval_command",
}


class Group(click.Group):
    """Commands loaded on first use; a PruneyoloError or a click usage error becomes one line on stderr (control
    characters escaped) and exit status 2."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PruneyoloError as exc:
            fail(self.message(ctx, exc))
        except click.UsageError as exc:  # click's own is four lines (usage, hint, blank, error)
            fail(f"{exc.format_message()} (see `{exc.ctx.command_path if exc.ctx else ctx.command_path} --help`)")

    def message(self, ctx, exc: PruneyoloError) -> str:
        """The error's line; an ArgumentError names the running command's option for its argument."""
        command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        if not isinstance(exc, ArgumentError) or command is None:
            return str(exc)
        return exc.naming(lambda argument: option_name(command, argument))


def fail(message: str):
    """`error: <message>` on one line of stderr (names from a file may hold escapes), then exit status 2."""
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(2)


def option_name(command: click.Command, argument: str) -> str:
    """`--layer-keep` for the argument `layer_keep` where the command has that option (by its name or its
    spelling), else the argument's own name."""
    flag = f"--{argument.replace('_', '-')}"
    for param in command.params:
        if param.name == argument or flag in param.opts:
            return max(param.opts, key=len)
    return argument


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pruneyolo")
def main():
    """Prune Darknet YOLO models and deploy any (pruned) cfg to OpenVINO."""
