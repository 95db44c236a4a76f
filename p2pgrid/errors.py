"""The one error hierarchy of p2pgrid.

Every error p2pgrid raises on bad input or a broken peer is a ``P2PGridError``. The categories
below live here; leaf classes live next to the code that raises them and subclass one of these.

    P2PGridError
    ├── ConfigError              bad or unknown config key / value (names the field)
    ├── KeystoreError            missing, corrupt or wrongly-locked key file, wrong passphrase
    ├── WireError                a message that cannot be trusted
    │   ├── DecodeError          not canonical msgpack, wrong shape or field type
    │   ├── OversizeError        larger than the kind's size limit
    │   ├── UnknownVersionError  domain or version we do not speak
    │   └── SignatureError       signature does not verify for the claimed signer and domain
    ├── MarketError              order book, pool and router rules (p2pgrid.market.errors)
    ├── LedgerError              chain rules, certificates, storage (p2pgrid.ledger.errors)
    ├── TradingError             takes, swaps and their answers
    ├── SettlementError          meter entries and slot settlement
    ├── DeviceError              hardware adapters and telemetry
    ├── NetError                 transport failures (peer unreachable, stream closed)
    └── RpcError                 local JSON-RPC API

Two questions every handler asks of an error, after h11: did *we* break it (a bug: let it crash)
or did the *peer / user* break it (a ``P2PGridError``: reject, report, keep running)?
"""

from __future__ import annotations


class P2PGridError(Exception):
    """Base of every error caused by bad input, a bad peer or a bad environment."""


class ConfigError(P2PGridError):
    pass


class KeystoreError(P2PGridError):
    pass


class WireError(P2PGridError):
    pass


class DecodeError(WireError):
    pass


class OversizeError(WireError):
    pass


class UnknownVersionError(WireError):
    pass


class SignatureError(WireError):
    pass


class MarketError(P2PGridError):
    pass


class LedgerError(P2PGridError):
    pass


class TradingError(P2PGridError):
    pass


class SettlementError(P2PGridError):
    pass


class DeviceError(P2PGridError):
    pass


class NetError(P2PGridError):
    pass


class RpcError(P2PGridError):
    pass
