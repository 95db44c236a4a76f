"""Power purchase agreements as Ricardian contracts.

``terms``: the filled template (a TOML file with named parameters), its canonical Markdown
rendering and the hash both parties sign. ``execution``: each slot of the term as a contract
position settled like a trade against metered delivery (pure). ``entries``: the ledger kinds.
"""
