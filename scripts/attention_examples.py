"""``python scripts/attention_examples.py ...``: the command of :mod:`commands.attention_examples`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.attention_examples import run

if __name__ == "__main__":
    run()
