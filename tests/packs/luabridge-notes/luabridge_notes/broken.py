"""A pack entry point whose import fails, to show that luabridge keeps the other packs."""

raise ImportError("this pack fails to import on purpose")
