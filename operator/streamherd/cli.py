"""The `streamherd` command."""

from __future__ import annotations

from pathlib import Path

import click

from streamherd import __version__
from streamherd.api.kinds import KINDS, crd_yaml


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """streamherd: Redis Streams consumer groups, run for you on Kubernetes."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per CRD here instead of printing them.",
)
def crds(output_dir: Path | None) -> None:
    """Print (or write) the CustomResourceDefinitions, generated from the API models."""
    if output_dir is None:
        click.echo("---\n".join(crd_yaml(kind) for kind in KINDS), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (output_dir / f"{kind.crd_name}.yaml").write_text(crd_yaml(kind))
