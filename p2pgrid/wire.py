"""Canonical encoding and the one signing path for every p2pgrid message (pure).

Every message kind is a frozen dataclass registered with ``@message(kind, version)``. Its body is
encoded as a msgpack *array* of its fields in declaration order — no maps, no floats — so the
encoding is canonical by construction: one value, one byte string. Decoding is strict: the bytes
must be exactly what re-encoding the decoded value gives, every field must have its declared type,
and each kind has a size limit.

A signed message on the wire::

    [kind, version, signer, body, signature]          (msgpack array)

and the signature is Ed25519 over the canonical encoding of ``[domain, signer, body]`` where
``domain = f"{kind}/v{version}"`` (e.g. ``p2pgrid/order/v1``). The domain tag makes a signature
for one kind or version worthless as another. A kind may name the body field that must equal the
signer (``signer_field="owner"``): an order is only valid when signed by its owner.

Field types a message may use: ``int``, ``bool``, ``str``, ``bytes``, a ``str`` Enum, another
registered dataclass (nested, unsigned), and ``tuple[T, ...]`` of any of these. Per-field limits go
in ``dataclasses.field(metadata=...)``: ``size`` (exact bytes length), ``max_len``, ``min``, ``max``.
A class may add a ``check()`` method for rules across fields; it runs on construction, so an
invalid message can neither be decoded nor built locally.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from p2pgrid.errors import DecodeError, OversizeError, SignatureError, UnknownVersionError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
DEFAULT_MAX_BYTES = 4096
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

M = TypeVar("M")


class Signer(typing.Protocol):
    """What signing needs of a key: its public half and a detached Ed25519 signature."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class MessageSpec:
    kind: str
    version: int
    max_bytes: int
    signer_field: str | None

    @property
    def domain(self) -> str:
        return f"{self.kind}/v{self.version}"


_REGISTRY: dict[tuple[str, int], type] = {}
_KNOWN_KINDS: set[str] = set()


def message(kind: str, version: int, *, max_bytes: int = DEFAULT_MAX_BYTES,
            signer_field: str | None = None) -> Callable[[type[M]], type[M]]:
    """Register a frozen dataclass as a wire message kind (decorator, applied above @dataclass)."""

    def register(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        if (kind, version) in _REGISTRY:
            raise TypeError(f"message kind {kind} v{version} registered twice")
        spec = MessageSpec(kind, version, max_bytes, signer_field)
        cls.WIRE = spec  # type: ignore[attr-defined]
        _install_checks(cls)
        _REGISTRY[(kind, version)] = cls
        _KNOWN_KINDS.add(kind)
        return cls

    return register


def struct(cls: type[M]) -> type[M]:
    """Mark a frozen dataclass as a nested (unsigned) wire structure, with field checks."""
    _install_checks(cls)
    return cls


def spec_of(cls: type) -> MessageSpec:
    spec = getattr(cls, "WIRE", None)
    if not isinstance(spec, MessageSpec):
        raise TypeError(f"{cls.__name__} is not a registered message kind")
    return spec


# --- field checking -------------------------------------------------------------------------

def _install_checks(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    fields = [(f, hints[f.name]) for f in dataclasses.fields(cls)]
    cls.__wire_fields__ = fields  # type: ignore[attr-defined]
    # Checks are compiled once per field: decoding runs them for every gossiped item.
    checks = [(f.name, _compile_check(hint, f.metadata, f"{cls.__name__}.{f.name}")) for f, hint in fields]
    user_check = getattr(cls, "check", None)
    dataclass_init = cls.__init__

    # Wrapping __init__ (not __post_init__, which @dataclass wires up before we run) makes every
    # construction path — decoding, local building, dataclasses.replace — pass the same checks.
    # The wrapper is generated with one line per field (as dataclasses generates __init__): a loop
    # of getattr calls cost as much as the checks themselves, for every item decoded.
    lines = ["def __init__(self, *args, **kwargs):", "    dataclass_init(self, *args, **kwargs)"]
    lines += [f"    check_{i}(self.{name})" for i, (name, _) in enumerate(checks)]
    if user_check is not None:
        lines.append("    user_check(self)")
    namespace: dict[str, Any] = {"dataclass_init": dataclass_init, "user_check": user_check}
    namespace.update({f"check_{i}": check for i, (_, check) in enumerate(checks)})
    exec("\n".join(lines), namespace)    # noqa: S102 - field names are the dataclass's identifiers
    cls.__init__ = namespace["__init__"]  # type: ignore[method-assign]


Check = Callable[[Any], None]


def _compile_check(hint: Any, meta: typing.Mapping[str, Any], where: str) -> Check:
    """A function that raises ``DecodeError`` (naming ``where``) unless a value fits the field."""
    if typing.get_origin(hint) is tuple:
        (item_hint, ellipsis) = typing.get_args(hint)
        if ellipsis is not Ellipsis:
            raise TypeError(f"{where}: only tuple[T, ...] is allowed in a wire message")
        item_check = _compile_check(item_hint, {}, f"{where}[]")
        max_len = meta.get("max_len")

        def check_tuple(value: Any) -> None:
            if type(value) is not tuple:
                raise DecodeError(f"{where}: expected a tuple")
            if max_len is not None and len(value) > max_len:
                raise DecodeError(f"{where}: more than {max_len} items")
            for item in value:
                item_check(item)
        return check_tuple
    if hint is bool:
        def check_bool(value: Any) -> None:
            if type(value) is not bool:
                raise DecodeError(f"{where}: expected a bool")
        return check_bool
    if hint is int:
        low, high = max(meta.get("min", INT_MIN), INT_MIN), min(meta.get("max", INT_MAX), INT_MAX)

        def check_int(value: Any) -> None:
            if type(value) is not int:
                raise DecodeError(f"{where}: expected a 64-bit int")
            if value < low:
                raise DecodeError(f"{where}: {value} below minimum {low}")
            if value > high:
                raise DecodeError(f"{where}: {value} above maximum {high}")
        return check_int
    if hint in (bytes, str):
        size, max_len = meta.get("size"), meta.get("max_len")
        pattern = re.compile(meta["pattern"]) if "pattern" in meta else None

        def check_text(value: Any) -> None:
            if type(value) is not hint:
                raise DecodeError(f"{where}: expected {hint.__name__}")
            if size is not None and len(value) != size:
                raise DecodeError(f"{where}: expected exactly {size} bytes")
            if max_len is not None and len(value) > max_len:
                raise DecodeError(f"{where}: longer than {max_len}")
            if pattern is not None and not pattern.fullmatch(value):
                raise DecodeError(f"{where}: {value!r} does not match {pattern.pattern}")
        return check_text
    if isinstance(hint, type) and (issubclass(hint, enum.Enum) or hasattr(hint, "__wire_fields__")):
        def check_instance(value: Any) -> None:
            if not isinstance(value, hint):
                raise DecodeError(f"{where}: expected {hint.__name__}")
        return check_instance
    raise TypeError(f"{where}: type {hint!r} is not allowed in a wire message")


# --- canonical encoding ---------------------------------------------------------------------

def to_plain(value: Any) -> Any:
    """A message value as plain msgpack-able data (arrays in field order)."""
    if hasattr(value, "__wire_fields__"):
        return [to_plain(getattr(value, f.name)) for f, _ in value.__wire_fields__]
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def from_plain(cls: type[M], plain: Any, where: str | None = None) -> M:
    """Build ``cls`` from plain data, checking every field; raises ``DecodeError``."""
    decoders = _DECODERS.get(cls) or _field_decoders(cls)
    if not isinstance(plain, list) or len(plain) != len(decoders):
        raise DecodeError(f"{where or cls.__name__}: expected an array of {len(decoders)} fields")
    values = {name: raw if decoder is None else decoder(raw, f"{where or cls.__name__}.{name}")
              for (name, decoder), raw in zip(decoders, plain)}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{where or cls.__name__}: {exc}") from exc


# How each field of a wire class is built from its plain value: None keeps the value as it is
# (ints, bytes, str, bool: the class's checks judge them); otherwise a function of (value, where).
# Compiled once per class: decoding runs for every gossiped item at every node, and looking the
# field types up again for each value was most of its cost.
FieldDecoder = Callable[[Any, str], Any]
_DECODERS: dict[type, tuple[tuple[str, FieldDecoder | None], ...]] = {}


def _field_decoders(cls: type) -> tuple[tuple[str, FieldDecoder | None], ...]:
    decoders = tuple((f.name, _decoder_for(hint)) for f, hint in cls.__wire_fields__)  # type: ignore[attr-defined]
    _DECODERS[cls] = decoders
    return decoders


def _decoder_for(hint: Any) -> FieldDecoder | None:
    if typing.get_origin(hint) is tuple:
        (item_hint, _) = typing.get_args(hint)
        item = _decoder_for(item_hint)

        def tuple_of(raw: Any, where: str) -> tuple[Any, ...]:
            if not isinstance(raw, list):
                raise DecodeError(f"{where}: expected an array")
            if item is None:
                return tuple(raw)
            return tuple(item(value, f"{where}[{i}]") for i, value in enumerate(raw))
        return tuple_of
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        def enum_of(raw: Any, where: str) -> enum.Enum:
            try:
                return hint(raw)
            except ValueError as exc:
                raise DecodeError(f"{where}: {raw!r} is not a {hint.__name__}") from exc
        return enum_of
    if isinstance(hint, type) and hasattr(hint, "__wire_fields__"):
        def structure_of(raw: Any, where: str) -> Any:
            return from_plain(hint, raw, where)
        return structure_of
    return None


def pack(plain: Any) -> bytes:
    return msgpack.packb(plain, use_bin_type=True)


def unpack(data: bytes, max_bytes: int) -> Any:
    """Strictly decode canonical msgpack: no trailing bytes, no maps, no floats, no ext types."""
    if len(data) > max_bytes:
        raise OversizeError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        plain = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from exc
    try:
        canonical = pack(plain)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"not canonical msgpack: {exc}") from exc
    if canonical != data or _has_forbidden(plain):
        raise DecodeError("not canonical msgpack (maps, floats or non-minimal encodings)")
    return plain


def _has_forbidden(plain: Any) -> bool:
    if isinstance(plain, list):
        # Leaves are judged here and only nested arrays recurse: this runs on every gossiped item.
        for value in plain:
            if isinstance(value, list):
                if _has_forbidden(value):
                    return True
            elif isinstance(value, (dict, float)) or value is None:
                return True
        return False
    return isinstance(plain, (dict, float)) or plain is None


def encode(value: Any) -> bytes:
    """Canonical bytes of an unsigned message or structure."""
    return pack(to_plain(value))


def decode(cls: type[M], data: bytes, max_bytes: int | None = None) -> M:
    """Strictly decode an unsigned structure of type ``cls``."""
    limit = max_bytes if max_bytes is not None else getattr(getattr(cls, "WIRE", None), "max_bytes", DEFAULT_MAX_BYTES)
    return from_plain(cls, unpack(data, limit))


# --- signing --------------------------------------------------------------------------------

def signing_bytes(domain: str, signer: bytes, body_plain: Any) -> bytes:
    """The exact bytes an Ed25519 signature covers."""
    return pack([domain, signer, body_plain])


@dataclass(frozen=True)
class Signed(Generic[M]):
    """A verified (or freshly signed) message: body, signer public key, signature."""

    body: M
    signer: bytes
    signature: bytes
    encoded: bytes = field(repr=False, compare=False)

    @property
    def message_id(self) -> bytes:
        """sha256 of the wire bytes: the identity of this exact signed message."""
        return hashlib.sha256(self.encoded).digest()

    @property
    def spec(self) -> MessageSpec:
        return spec_of(type(self.body))


def sign(body: M, key: Signer) -> Signed[M]:
    """Sign ``body`` with ``key`` under its kind's domain tag."""
    spec = spec_of(type(body))
    signer = key.public_key
    if spec.signer_field is not None and getattr(body, spec.signer_field) != signer:
        raise SignatureError(f"{spec.kind} must be signed by its {spec.signer_field}")
    plain = to_plain(body)
    signature = key.sign(signing_bytes(spec.domain, signer, plain))
    encoded = pack([spec.kind, spec.version, signer, plain, signature])
    if len(encoded) > spec.max_bytes:
        raise OversizeError(f"{spec.kind} of {len(encoded)} bytes exceeds {spec.max_bytes}")
    return Signed(body, signer, signature, encoded)


MAX_SIGNED_BYTES = 64 * 1024


def decode_signed(data: bytes, expected: type[M] | None = None) -> Signed[M]:
    """Decode and verify a signed message. Raises a ``WireError`` subclass on any defect."""
    plain = unpack(data, max(MAX_SIGNED_BYTES, spec_of(expected).max_bytes if expected else 0))
    if not isinstance(plain, list) or len(plain) != 5:
        raise DecodeError("a signed message is [kind, version, signer, body, signature]")
    kind, version, signer, body_plain, signature = plain
    if type(kind) is not str or type(version) is not int:
        raise DecodeError("kind must be a str and version an int")
    cls = _REGISTRY.get((kind, version))
    if cls is None:
        what = "version" if kind in _KNOWN_KINDS else "kind"
        raise UnknownVersionError(f"unknown message {what}: {kind} v{version}")
    if expected is not None and cls is not expected:
        raise DecodeError(f"expected {spec_of(expected).kind}, got {kind}")
    spec = spec_of(cls)
    if len(data) > spec.max_bytes:
        raise OversizeError(f"{kind} of {len(data)} bytes exceeds {spec.max_bytes}")
    if type(signer) is not bytes or len(signer) != PUBLIC_KEY_SIZE:
        raise DecodeError("signer must be a 32-byte Ed25519 public key")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise DecodeError("signature must be 64 bytes")
    body = from_plain(cls, body_plain)
    if not verify_signature(signer, signing_bytes(spec.domain, signer, body_plain), signature):
        raise SignatureError(f"bad signature on {spec.domain}")
    if spec.signer_field is not None and getattr(body, spec.signer_field) != signer:
        raise SignatureError(f"{kind} signed by someone other than its {spec.signer_field}")
    return Signed(body, signer, signature, data)


def verify_signature(public_key: bytes, message_bytes: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message_bytes, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


# --- orders ---------------------------------------------------------------------------------

ZONE_PATTERN = r"[a-z0-9][a-z0-9-]{0,31}"
MAX_QTY_WH = 10**9        # 1 GWh: far above anything one slot of one node can deliver
MAX_PRICE = 10**10        # 10,000 credits per kWh


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


class Source(str, enum.Enum):
    """Where the energy of an offer comes from; ``green`` sources carry certificates."""

    PV = "pv"
    WIND = "wind"
    BATTERY = "battery"
    GRID = "grid"
    MIXED = "mixed"
    NONE = "none"   # bids

    @property
    def is_green(self) -> bool:
        return self in (Source.PV, Source.WIND)


@message("p2pgrid/order", 1, max_bytes=512, signer_field="owner")
@dataclass(frozen=True)
class Order:
    """A limit order for one delivery slot in one zone."""

    order_id: bytes = field(metadata={"size": 16})
    owner: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    side: Side
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot: int = field(metadata={"min": 0})
    qty_wh: int = field(metadata={"min": 1, "max": MAX_QTY_WH})
    limit_price: int = field(metadata={"min": 0, "max": MAX_PRICE})
    green: bool
    source: Source
    created_ms: int = field(metadata={"min": 0})
    expiry_ms: int = field(metadata={"min": 0})
    nonce: int = field(metadata={"min": 0})

    def check(self) -> None:
        if self.expiry_ms <= self.created_ms:
            raise DecodeError("Order.expiry_ms must be after created_ms")
        if self.green and not self.source.is_green:
            raise DecodeError("Order.green requires a green source")


@message("p2pgrid/cancel", 1, max_bytes=256, signer_field="owner")
@dataclass(frozen=True)
class Cancel:
    """The owner withdraws what is left of an order."""

    order_id: bytes = field(metadata={"size": 16})
    owner: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot: int = field(metadata={"min": 0})
    created_ms: int = field(metadata={"min": 0})


def registered_kinds() -> dict[tuple[str, int], type]:
    return dict(_REGISTRY)


__all__ = [
    "Cancel", "MessageSpec", "Order", "OrderBatch", "Side", "Signed", "Signer", "Source", "decode", "decode_signed",
    "encode", "from_plain", "message", "registered_kinds", "sign", "spec_of", "struct", "to_plain",
    "verify_signature",
]


# --- gossip batches -------------------------------------------------------------------------

MAX_BATCH_BYTES = 16 * 1024
MAX_BATCH_ITEMS = 256


@struct
@dataclass(frozen=True)
class OrderBatch:
    """One gossip message: a node's order changes for one tick, each item a signed Order or Cancel.

    The batch itself is not signed by p2pgrid: gossipsub's strict signing already signs it with the
    publishing peer's key (the same Ed25519 key), and every item carries its owner's signature.
    """

    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    sent_ms: int = field(metadata={"min": 0})
    items: tuple[bytes, ...] = field(metadata={"max_len": MAX_BATCH_ITEMS})
