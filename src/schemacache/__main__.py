"""``python -m schemacache``: the same as the ``schemacache`` command."""

from .cli import main

if __name__ == "__main__":
    main()
