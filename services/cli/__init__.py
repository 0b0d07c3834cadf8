"""`voxpop`: the one console command. Each subcommand is a thin shell over a service module.

Heavy imports (torch, kafka, sqlalchemy) happen inside the commands so `voxpop --help` is fast.
The commands live by group in the modules below; importing them registers them on `app`, in the
order `voxpop --help` lists them.
"""

# isort: off
from services.cli import servers, stream, models, api  # noqa: F401 (registers the commands)

# isort: on
from services.cli.app import app, main

__all__ = ["app", "main"]
