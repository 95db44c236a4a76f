"""Replicated ledger: certified account chains (FastPay / Linera style).

Modules, functional core first:

* ``messages``  wire kinds: entries, entry bodies, votes, certificates, stream frames (pure)
* ``merkle``    RFC 9162 Merkle trees for vote batches and the state root (pure)
* ``chain``     entry rules per kind and state derivation, ``apply_entry`` / ``state_root`` (pure)
* ``committee`` the zone committee, vote and certificate rules, the never-vote-twice check (pure)
* ``protocol``  sans-IO vote and sync protocol state machines: frames in, frames out (pure)
* ``store``     the one storage module: SQLite in WAL mode on a worker thread (``trio.to_thread``)
* ``service``   ``LedgerService`` (trio): submit entries, validate as a committee member, gossip, sync

This package's ``__init__`` imports nothing, so importing a pure module pulls in no I/O library.
"""
