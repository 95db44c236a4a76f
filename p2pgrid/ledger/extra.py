"""``LedgerState.extra``: the namespaces of added kinds, indexed by key prefix (pure).

Added kinds keep their records in one mapping under keys like ``share_programme/<id hex>`` or
``share_payout/<programme hex>/<period>``. Rules and the services around them often want every
record of one kind (every programme, every swap, every meter registration) or of one object
(every payout of a programme). Scanning the whole mapping for that costs the whole state — every
meter reading, swap and settlement of every slot — so a service that asks on every tick does
work that grows with history, not with what changed.

``ExtraMap`` is a plain mapping that also keeps, for every ``/``-terminated prefix of a key
(``share_payout/`` and ``share_payout/<programme hex>/`` for the payout above), the keys that have
it. The index is maintained on every write and delete, so ``keys_with(prefix)`` costs the size of
the answer. ``Overlay`` is the scratch copy a validator checks a batch on (what
``LedgerState.overlay`` gives for every field): writes go to its own mapping, reads fall through
to the base, exactly like ``collections.ChainMap({}, base)`` (which it replaces, faster);
``ExtraOverlay`` keeps its own writes in an ``ExtraMap`` and its ``keys_with`` is the union of
both indexes. Neither changes what the state holds, so the state root is unaffected.

``prefixed_keys(extra, prefix)`` and ``prefixed_items(extra, prefix)`` are what rules call: the
keys (or ``(key, value)`` pairs) with the prefix, in no particular order (callers sort what they
return, as they did with the scans).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["ExtraMap", "ExtraOverlay", "Overlay", "key_prefixes", "prefixed_items", "prefixed_keys"]


def key_prefixes(key: str) -> Iterator[str]:
    """Every ``/``-terminated prefix of ``key``, shortest first (``"a/b/c"`` → ``"a/"``, ``"a/b/"``)."""
    at = key.find("/")
    while at >= 0:
        yield key[:at + 1]
        at = key.find("/", at + 1)


class ExtraMap(MutableMapping[str, Any]):
    """A dict of namespaced keys with an index by every ``/``-terminated key prefix."""

    __slots__ = ("_data", "_by_prefix")

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._data: dict[str, Any] = {}
        self._by_prefix: dict[str, dict[str, None]] = {}   # prefix → keys having it (an ordered set)
        for key, value in (items.items() if isinstance(items, Mapping) else items):
            self[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._data:
            by_prefix = self._by_prefix
            for prefix in key_prefixes(key):
                keys = by_prefix.get(prefix)
                if keys is None:
                    keys = by_prefix[prefix] = {}
                keys[key] = None
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        for prefix in key_prefixes(key):
            keys = self._by_prefix[prefix]
            del keys[key]
            if not keys:
                del self._by_prefix[prefix]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Any:
        return self._data.items()

    def values(self) -> Any:
        return self._data.values()

    def keys_with(self, prefix: str) -> Iterable[str]:
        """The keys starting with ``prefix``, which must end with ``/`` (an indexed prefix)."""
        return self._by_prefix.get(prefix, {}).keys()

    def __repr__(self) -> str:
        return f"ExtraMap({self._data!r})"


class Overlay(MutableMapping[Any, Any]):
    """Writes kept apart from ``base``, reads falling through to it: ``ChainMap({}, base)``'s
    behaviour (iteration order, length, deleting only what the overlay wrote) at a fraction of
    its cost — a validator judges every entry on overlays, and ChainMap's lookups run three
    Python frames each."""

    __slots__ = ("_own", "_writes", "_base")

    def __init__(self, base: MutableMapping[Any, Any]) -> None:
        self._own: dict[Any, Any] = {}      # what this overlay wrote (read directly, for speed)
        self._writes: MutableMapping[Any, Any] = self._own   # where writes and deletes go
        self._base = base

    def __getitem__(self, key: Any) -> Any:
        own = self._own
        if key in own:
            return own[key]
        return self._base[key]

    def get(self, key: Any, default: Any = None) -> Any:
        own = self._own
        if key in own:
            return own[key]
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._base

    def __setitem__(self, key: Any, value: Any) -> None:
        self._writes[key] = value

    def __delitem__(self, key: Any) -> None:
        # As ChainMap: only what the overlay itself wrote can be deleted (the base shows again).
        if key not in self._own:
            raise KeyError(f"key not written in this overlay: {key!r}")
        del self._writes[key]

    def __iter__(self) -> Iterator[Any]:
        base = self._base
        yield from base
        yield from (key for key in self._own if key not in base)

    def __len__(self) -> int:
        base = self._base
        return len(base) + sum(1 for key in self._own if key not in base)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(own={self._own!r}, base={self._base!r})"


class ExtraOverlay(Overlay):
    """An ``Overlay`` of ``LedgerState.extra`` whose own writes are indexed too (``_index``, an
    ``ExtraMap`` whose plain dict is the ``_own`` reads look in)."""

    __slots__ = ("_index",)

    def __init__(self, base: ExtraMap | ExtraOverlay) -> None:
        super().__init__(base)
        self._index = self._writes = ExtraMap()
        self._own = self._index._data

    def keys_with(self, prefix: str) -> Iterable[str]:
        own = self._index.keys_with(prefix)
        if not own:
            return self._base.keys_with(prefix)  # type: ignore[attr-defined]
        base = self._base
        return [*base.keys_with(prefix), *(key for key in own if key not in base)]  # type: ignore[attr-defined]


def prefixed_keys(extra: Mapping[str, Any], prefix: str) -> list[str]:
    """Every key of ``extra`` starting with ``prefix`` (which ends with ``/``): from the index of an
    ``ExtraMap`` or ``ExtraOverlay``, by a scan of any other mapping."""
    if not prefix.endswith("/"):
        raise ValueError(f"only /-terminated prefixes are indexed, not {prefix!r}")
    if isinstance(extra, (ExtraMap, ExtraOverlay)):
        return list(extra.keys_with(prefix))
    return [key for key in extra if key.startswith(prefix)]


def prefixed_items(extra: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """``(key, value)`` of every key of ``extra`` starting with ``prefix`` (see ``prefixed_keys``)."""
    return [(key, extra[key]) for key in prefixed_keys(extra, prefix)]
