"""One module per `pulsecast` sub-command: `HELP`, `add_arguments(parser)`, `run(args) -> int`."""
