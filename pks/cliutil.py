"""What every `pks` command shares: user mistakes as one line and exit 2, the checks of OUT,
the taxonomy and the device a user names."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from pks.errors import UserError


def friendly(fn):
    """A user mistake (UserError) becomes `pks: error: ...` on stderr and exit code 2. Anything
    else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except UserError as e:
            typer.echo(f"pks: error: {e}", err=True)
            raise typer.Exit(2) from None  # the message above says it all

    return wrapper


STORAGE_OPTIONS_HELP = (
    "fsspec options for an object-store OUT (and inputs of its protocol), as JSON, e.g. "
    '\'{"endpoint_url": "http://host:9000"}\'; default: the client\'s environment (AWS_*).'
)


def local_out(out: Path | str) -> Path:
    """OUT for the commands that work on a local folder only: a URL is a one-line error (a
    Path argument has already folded s3://b/x into s3:/b/x)."""
    url = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/+(.*)", str(out))
    if url:
        raise UserError(
            f"this command needs a local OUT folder, got {url[1]}://{url[2]} (pks curate and pks shard "
            "work on object storage; copy the run down first, e.g. aws s3 sync)"
        )
    return Path(out)


def need_manifest(out: Path) -> Path:
    """OUT/manifest.parquet, or a one-line error when OUT holds no curated run."""
    manifest = local_out(out) / "manifest.parquet"
    if not manifest.exists():
        raise UserError(f"no manifest in {out} (run pks curate first)")
    return manifest


def need_audit(out: Path) -> None:
    """A one-line error when OUT holds no curated run or no audit yet."""
    need_manifest(out)
    if not (out / "audit" / "audit.db").exists():
        raise UserError(f"no audit in {out} (start with pks audit add-user)")


def load_taxonomy(version: int | None):
    """The taxonomy the user named (a version that is not shipped is their mistake)."""
    import taxonomy

    if version is not None and version not in taxonomy.available_versions():
        raise UserError(f"no taxonomy v{version}; shipped: {taxonomy.available_versions()}")
    return taxonomy.load(version)


def torch_device(name: str | None):
    """--device: None (the GPU when there is one), or a torch device that exists here."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UserError(f"--device {name}: no such GPU here")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return device


def size_option(text: str | None):
    """--size WxH as (w, h), even and positive; None when not given."""
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 640x360, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise UserError(f"--size needs positive even numbers, got {text!r}")
    return w, h


DEFAULT_COMMAND = "default"  # the hidden command of a DefaultCommandGroup (never typed: see parse_args)


class DefaultCommandGroup(TyperGroup):
    """A command group with a default command, as `pks train`: `pks train SOURCE ...` runs the
    hidden command DEFAULT_COMMAND, `pks train encode ...` the listed subcommand. A first
    argument that is not a listed subcommand (nor --help) is the default command's, whatever it
    is, so a folder named like any hidden command is still a SOURCE."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        listed = {name for name, cmd in self.commands.items() if not cmd.hidden}
        if args and args[0] not in listed and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


class _GroupsPath(typer.Context):
    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent else super().command_path


class DefaultCommand(TyperCommand):
    """The default command of a DefaultCommandGroup: its usage and errors say `pks train ...`,
    not the hidden name."""

    context_class = _GroupsPath
