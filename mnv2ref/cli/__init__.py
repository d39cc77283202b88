"""The subcommands of the ``mnv2ref`` command, one module each; ``mnv2ref/__main__.py`` wires them to argparse.

Each module has ``add_parser(subparsers)`` (its options and ``--help`` text)
and ``run(args) -> exit status``. Shared option handling (weights, alpha,
input size, reading an input image or array) is in ``common.py``.
"""
