"""``ray-sbir`` command line: the arguments (:mod:`.parser`) and the subcommands (:mod:`.commands`), thin layers
over the library."""

from ray_sbir.cli.commands import main
from ray_sbir.cli.parser import build_parser

__all__ = ["build_parser", "main"]
