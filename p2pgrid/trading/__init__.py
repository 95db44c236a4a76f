"""Decentralised trading: local books from gossip, takes and swaps, certified fills."""
