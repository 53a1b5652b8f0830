"""A flag that starts False, turns True once for good, and is copied into the globals of the modules that test it.

Hot paths test such flags to skip work that only matters once something has happened in the process (an
inference_mode block has opened: grad_mode's ``_inference_seen``; a module hook has been registered: nn/hooks.py's
``_hooks_seen``). A global name read in the testing module's own namespace is the cheapest test Python has (no
attribute lookup, no call), so each module that reads the flag hands its ``globals()`` to :meth:`SeenFlag.watch`
and :meth:`SeenFlag.note` writes True into all of them.
"""
from __future__ import annotations

from typing import List

__all__ = ["SeenFlag"]


class SeenFlag:
    """``flag = SeenFlag("_name_seen")``; a reading module runs ``flag.watch(globals())`` at import and tests its
    global ``_name_seen``; ``flag.note()`` sets it everywhere (idempotent). ``bool(flag)`` is its value."""

    __slots__ = ("name", "value", "_namespaces")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = False
        self._namespaces: List[dict] = []

    def watch(self, namespace: dict) -> None:
        """Keep ``namespace[self.name]`` equal to the flag from now on."""
        namespace[self.name] = self.value
        self._namespaces.append(namespace)

    def note(self) -> None:
        """The event happened: the flag is True in every watching namespace (for the rest of the process)."""
        if self.value:
            return
        self.value = True
        for ns in self._namespaces:
            ns[self.name] = True

    def __bool__(self) -> bool:
        return self.value

    def __repr__(self) -> str:
        return f"SeenFlag({self.name!r}, {self.value}, {len(self._namespaces)} namespaces)"
