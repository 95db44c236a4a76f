"""Join bundles and join requests: how a neighbour joins a zone without copying peer ids (pure).

The operator's node is the zone's gateway. ``p2pgrid zone invite`` signs an ``Invite`` with the
gateway key: the zone preset (the TOML text of one ``[zone]`` table: id, slot rules, tariffs,
gateway account, validators) and the bootstrap addresses of running nodes of the zone. A joiner
checks, before writing anything, that the bundle decodes canonically, that its signature
verifies under the ``p2pgrid/invite/v1`` domain, and that its signer **is the gateway the preset
names** — so a bundle whose preset or addresses were changed in transit, or re-signed by anyone
but the zone's operator, is refused. (Whether the operator is the one the joiner meant is checked
with ``--operator``: the first hex digits of the operator account, read out by the operator.)

``p2pgrid join`` answers with a ``JoinRequest`` signed by the joiner's new node key: its account,
its meter public key, its role and nameplate (export capacity, PV and battery size), for the
zone named in the bundle. ``p2pgrid zone approve`` checks it the same way and has the gateway
register the meter (``meter_registration`` v2 with ``export_w``) and fund the account.

Both travel as one copyable line: a prefix naming what it is, then the signed message's wire bytes
in unpadded URL-safe base64 (``p2pgrid-invite:…``, ``p2pgrid-request:…``); a file holding that line
is read the same way. Every defect is a typed error: ``InvalidInvite`` / ``InvalidJoinRequest``
(not one, damaged, bad signature, not signed by the gateway, a preset that is not a valid zone) and
``WrongZone`` (a valid message for another zone than the one expected).
"""

from __future__ import annotations

import base64
import binascii
import json
import tomllib
from dataclasses import dataclass, field

from p2pgrid.config import ROLES, ZoneSection, zone_from_preset
from p2pgrid.errors import ConfigError, DecodeError, WireError
from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, Signed, decode_signed, message

INVITE_PREFIX = "p2pgrid-invite:"
REQUEST_PREFIX = "p2pgrid-request:"
MAX_PRESET_CHARS = 12_000
MAX_BOOTSTRAP = 8
MAX_ADDRESS_CHARS = 256
MAX_EXPORT_W = 10**9
ROLE_PATTERN = "|".join(ROLES)
NAME_PATTERN = r"[A-Za-z0-9_.-]{1,32}"


class InvalidInvite(ConfigError):
    """Not a join bundle of a zone, or one that was damaged, tampered with or not signed by the
    zone's gateway."""


class InvalidJoinRequest(ConfigError):
    """Not a join request, or a damaged or tampered one."""


class WrongZone(ConfigError):
    """A valid bundle or request, but for another zone than the one expected."""


@message("p2pgrid/invite", 1, max_bytes=16 * 1024, signer_field="operator")
@dataclass(frozen=True)
class Invite:
    """A zone's invitation: its preset and where to reach it, signed by the zone gateway."""

    operator: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    preset: str = field(metadata={"max_len": MAX_PRESET_CHARS})
    bootstrap: tuple[str, ...] = field(metadata={"max_len": MAX_BOOTSTRAP})
    issued_ms: int = field(metadata={"min": 0})


@message("p2pgrid/join-request", 1, max_bytes=1024, signer_field="account")
@dataclass(frozen=True)
class JoinRequest:
    """A neighbour's request to be metered (and funded) in a zone, signed by its node key."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    meter_key: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    name: str = field(metadata={"pattern": NAME_PATTERN})
    role: str = field(metadata={"pattern": ROLE_PATTERN})
    export_w: int = field(metadata={"min": 0, "max": MAX_EXPORT_W})
    pv_w: int = field(metadata={"min": 0, "max": MAX_EXPORT_W})
    battery_wh: int = field(metadata={"min": 0, "max": MAX_EXPORT_W})
    created_ms: int = field(metadata={"min": 0})

    def check(self) -> None:
        if self.meter_key == self.account:
            raise DecodeError("JoinRequest.meter_key must not be the account's own key")


def parse_preset(text: str) -> ZoneSection:
    """The zone a preset's TOML text describes (``ConfigError`` naming the defect)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the zone preset is not valid TOML: {exc}") from None
    return zone_from_preset(raw)


def check_invite(invite: Invite) -> ZoneSection:
    """The zone of a decoded, signature-checked invite, if it is one a node can join: a valid
    preset of the zone the invite names, whose gateway is the invite's signer, with at least one
    bootstrap address (``InvalidInvite`` otherwise)."""
    try:
        zone = parse_preset(invite.preset)
    except ConfigError as exc:
        raise InvalidInvite(f"the bundle's zone preset is not valid: {exc}") from None
    if zone.id != invite.zone:
        raise InvalidInvite(f"the bundle names zone {invite.zone!r} but its preset is for zone {zone.id!r}")
    if zone.gateway_account != invite.operator.hex():
        raise InvalidInvite("the bundle is not signed by the gateway its zone preset names")
    if not zone.validators:
        raise InvalidInvite("the bundle's zone has no validators: nothing could be certified")
    if not invite.bootstrap:
        raise InvalidInvite("the bundle names no bootstrap address")
    for address in invite.bootstrap:
        if not address.startswith("/") or "/p2p/" not in address or len(address) > MAX_ADDRESS_CHARS:
            raise InvalidInvite(f"bootstrap address {address[:60]!r} is not a multiaddr with /p2p/<peer id>")
    return zone


def invite_text(signed: Signed[Invite]) -> str:
    return _text(INVITE_PREFIX, signed.encoded)


def request_text(signed: Signed[JoinRequest]) -> str:
    return _text(REQUEST_PREFIX, signed.encoded)


def read_invite(text: str, *, zone: str | None = None, operator_prefix: str | None = None) -> Signed[Invite]:
    """A checked invite from its text form (``check_invite``); ``zone`` and ``operator_prefix``, if
    given, are what the joiner expects (``WrongZone`` / ``InvalidInvite`` if not)."""
    signed = _read(text, INVITE_PREFIX, Invite, InvalidInvite, "join bundle")
    check_invite(signed.body)
    if zone is not None and signed.body.zone != zone:
        raise WrongZone(f"the bundle is for zone {signed.body.zone!r}, not {zone!r}")
    if operator_prefix is not None:
        wanted = operator_prefix.strip().lower()
        if len(wanted) < 8 or not signed.signer.hex().startswith(wanted):
            raise InvalidInvite(f"the bundle is signed by operator {signed.signer.hex()[:16]}…, not by {wanted[:16]}… "
                                "(give at least 8 hex digits)")
    return signed


def read_join_request(text: str, *, zone: str) -> Signed[JoinRequest]:
    """A checked join request from its text form, for ``zone`` (``WrongZone`` if for another)."""
    signed = _read(text, REQUEST_PREFIX, JoinRequest, InvalidJoinRequest, "join request")
    if signed.body.zone != zone:
        raise WrongZone(f"the join request is for zone {signed.body.zone!r}, but this operator runs zone {zone!r}")
    return signed


def _text(prefix: str, encoded: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(encoded).decode("ascii").rstrip("=")


def _read(text: str, prefix: str, kind: type, error: type[ConfigError], what: str) -> Signed:  # type: ignore[type-arg]
    compact = "".join(text.split())
    if not compact.startswith(prefix):
        raise error(f"not a {what}: it must start with {prefix!r}")
    body = compact[len(prefix):]
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise error(f"the {what} is damaged: not base64 text") from None
    try:
        return decode_signed(data, kind)
    except WireError as exc:
        raise error(f"the {what} is damaged or was tampered with: {exc}") from None


def render_preset(zone: ZoneSection) -> str:
    """The TOML text of a zone preset holding ``zone`` (``parse_preset`` reads it back equal)."""
    lines = [
        f"# Zone preset {zone.id!r}: the settings every node of the zone shares. Written by",
        "# `p2pgrid zone init`; neighbours receive it in the operator's join bundle (`p2pgrid zone invite`).",
        "",
        "[zone]",
        f"id = {_toml_str(zone.id)}",
        f"gateway_account = {_toml_str(zone.gateway_account)}   # the operator's node: mints, registers meters, settles",
        f"credit_limit_uc = {zone.credit_limit_uc}   # how far below zero an ordinary balance may go, µc",
        f"ledger_domain = {_toml_str(zone.ledger_domain)}",
        "",
        "[zone.slots]",
        f"length_s = {zone.slots.length_s}   # delivery slot length, seconds",
        f"horizon_s = {zone.slots.horizon_s}   # trading for a slot opens this long before it",
        f"gate_s = {zone.slots.gate_s}   # trading closes this long before the slot",
        f"grace_s = {zone.slots.grace_s}   # meter readings are due this long after the slot",
        "",
        "[zone.tariffs]",
        f"retail_price = {zone.tariffs.retail_price}   # µc/kWh: what a shortfall costs",
        f"feed_in_price = {zone.tariffs.feed_in_price}   # µc/kWh: what an excess earns",
        "",
        "[zone.grid_fees]",
        *(f"{other} = {fee}" for other, fee in sorted(zone.grid_fees.items())),
    ]
    for validator in zone.validators:
        lines += ["", "[[zone.validators]]", f"public_key = {_toml_str(validator.public_key)}",
                  f"address = {_toml_str(validator.address)}"]
    return "\n".join(lines) + "\n"


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for the text config values hold)."""
    return json.dumps(text, ensure_ascii=False)
