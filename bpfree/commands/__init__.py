"""Tier: the faces. One module per ``bpfree`` subcommand (its name), each with
``register(subparsers)``: argument parsing and display only; the work is below. May import
every tier (``bpfree.cli`` lists them)."""
