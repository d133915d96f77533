"""The commands: one module per command line, each with ``main(argv)`` (the work,
raising on bad input) and ``run(argv)`` (the command: one ``<command>: error:``
line and exit status 2 for what the user must fix).

Layer: the top; may import every package below it. ``scripts/<name>.py`` runs
``run()``; ``pip install -e .`` also installs them as ``nmt-train``,
``nmt-prepare``, ``nmt-evaluate``, ``nmt-translate``, ``nmt-average``,
``nmt-export-ct2`` and ``nmt-compare`` (``pyproject.toml``).
"""
