"""``python -m luabridge``: the same command line as the ``luabridge`` console script."""

from __future__ import annotations

from luabridge.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
