"""Integration packs: one self-contained package per service (``integrations.loops`` first).

Each pack exposes an ``integration`` object built from ``luabridge.action`` metadata; the runtime
finds its actions, clients and docs through that object alone.
"""
