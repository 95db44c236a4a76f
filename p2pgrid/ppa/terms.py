"""A PPA's terms: the filled TOML template, its canonical Markdown text and its hash (pure).

A power purchase agreement is a **Ricardian contract**: one document that people read and
machines execute. The parties fill a TOML template with named parameters (``parse_terms_toml``;
the shipped template is ``TEMPLATE_TOML``) and get ``PpaTerms``, a wire structure that ledger
entries carry. ``render_terms`` turns the terms into the contract's **canonical text**: Markdown,
ASCII only, ``\\n`` line ends, every parameter written out in words and integers (no floats, no
locale, no time zone but UTC), so the same terms give the same bytes on any machine.
``terms_hash`` is the SHA-256 of those bytes — what ``sha256sum`` prints for the text — and it is
the contract's id: the offer and the acceptance on the ledger are signatures over it, and
validators re-render the terms an offer carries and refuse it unless the hash matches. Rendering
is one-to-one: two different terms never give the same text (every field appears, free text is
one line of printable ASCII), so the hash pins every parameter and every word of the prose.

Parameters (``PpaTerms``; TOML names in brackets where they differ)
---------------------------------------------------------------------
* ``name``: a title, printable ASCII, one line.
* ``seller``, ``buyer``: the parties' accounts (hex in TOML); ``zone``: the ledger zone.
* ``start_slot`` ≤ slot < ``end_slot``: the term, slot starts in UTC seconds (TOML ``start`` /
  ``end`` as ``YYYY-MM-DDTHH:MM:SSZ``), aligned to ``slot_length_s``.
* ``shape``: ``pay_as_produced`` — ``share_ppm`` millionths (TOML ``share_percent``, up to four
  decimals) of what ``generator`` (the seller's metered account) exports in each slot, by its
  own certified meter; ``exclusive`` says no other exclusive share of that generator may overlap
  beyond 100 %. ``baseload`` — ``baseload_wh`` Wh every slot. ``profile`` — ``profile_wh[i]`` Wh
  in the ``i``-th slot of each UTC day (one value per slot of a day).
* ``price_uc_per_kwh`` (TOML ``price_credits_per_kwh``, decimal credits); with ``index_name``
  set the price of a slot is ``price × value / index_base``, floored, where ``value`` is the
  zone operator's latest published value of that reference at or before the slot.
* ``green``: certificates move with the delivered Wh (as far as the seller's own metered green
  generation of the slot covers them).
* ``priority_over_spot``: the seller's metered export covers its PPA positions before its spot
  sales of the same slot (otherwise pro rata with them).
* ``shortfall``: ``imbalance`` — undelivered Wh are drawn from the grid and the seller pays the
  zone's shortfall price for them (the buyer still pays the contract); ``penalty`` — in addition
  the seller pays the buyer ``penalty_uc_per_kwh`` per undelivered Wh. Surplus export beyond
  the seller's positions is always the seller's (its spot sales, then feed-in).
* ``notice_s`` (TOML ``notice_days``): a termination takes effect no earlier than this long
  after it is dated; ``termination_penalty_uc`` (TOML ``termination_penalty_credits``): what the
  terminating party pays the other.

Errors: ``InvalidTerms`` (a ``DecodeError``: a ledger body carrying such terms is ``bad_body``).
"""

from __future__ import annotations

import enum
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from p2pgrid.errors import DecodeError
from p2pgrid.units import credits, format_credits
from p2pgrid.wire import MAX_PRICE, MAX_QTY_WH, PUBLIC_KEY_SIZE, ZONE_PATTERN, struct

__all__ = [
    "InvalidTerms", "MAX_PROFILE_SLOTS", "PPM", "PpaTerms", "Shape", "Shortfall", "TEMPLATE_ID", "TEMPLATE_TOML",
    "parse_terms_toml", "render_terms", "terms_hash", "terms_text_bytes",
]

TEMPLATE_ID = "p2pgrid-ppa/1"
PPM = 1_000_000
MAX_PROFILE_SLOTS = 288          # a 5-minute slot calendar
MAX_NAME = 120
MAX_INDEX_NAME = 32
INDEX_NAME_PATTERN = r"[a-z0-9][a-z0-9.-]{0,31}"
MAX_TERM_S = 30 * 366 * 86400    # thirty years
MAX_PENALTY_UC = 10**15
SECONDS_PER_DAY = 86400


class InvalidTerms(DecodeError):
    pass


class Shape(str, enum.Enum):
    PAY_AS_PRODUCED = "pay_as_produced"
    BASELOAD = "baseload"
    PROFILE = "profile"


class Shortfall(str, enum.Enum):
    IMBALANCE = "imbalance"
    PENALTY = "penalty"


def _key() -> Any:
    return field(metadata={"size": PUBLIC_KEY_SIZE})


@struct
@dataclass(frozen=True)
class PpaTerms:
    """Every parameter of one PPA (module docstring); ``template`` names the prose it is read with."""

    template: str = field(metadata={"max_len": 32})
    name: str = field(metadata={"max_len": MAX_NAME})
    seller: bytes = _key()
    buyer: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot_length_s: int = field(metadata={"min": 60, "max": SECONDS_PER_DAY})
    start_slot: int = field(metadata={"min": 0})
    end_slot: int = field(metadata={"min": 0})
    shape: Shape
    generator: bytes = field(metadata={"max_len": PUBLIC_KEY_SIZE})   # b"" unless pay-as-produced
    share_ppm: int = field(metadata={"min": 0, "max": PPM})
    exclusive: bool
    baseload_wh: int = field(metadata={"min": 0, "max": MAX_QTY_WH})
    profile_wh: tuple[int, ...] = field(metadata={"max_len": MAX_PROFILE_SLOTS})
    price_uc_per_kwh: int = field(metadata={"min": 0, "max": MAX_PRICE})
    index_name: str = field(metadata={"max_len": MAX_INDEX_NAME})
    index_base: int = field(metadata={"min": 0, "max": 2**53})
    green: bool
    priority_over_spot: bool
    shortfall: Shortfall
    penalty_uc_per_kwh: int = field(metadata={"min": 0, "max": MAX_PRICE})
    notice_s: int = field(metadata={"min": 0, "max": MAX_TERM_S})
    termination_penalty_uc: int = field(metadata={"min": 0, "max": MAX_PENALTY_UC})

    def check(self) -> None:
        problem = _problem(self)
        if problem:
            raise InvalidTerms(f"PPA terms: {problem}")

    @property
    def slots_per_day(self) -> int:
        return SECONDS_PER_DAY // self.slot_length_s

    def covers(self, slot: int) -> bool:
        return self.start_slot <= slot < self.end_slot

    def other_party(self, account: bytes) -> bytes:
        return self.buyer if account == self.seller else self.seller

    def contracted_wh(self, slot: int) -> int | None:
        """Wh of a baseload or profile position in ``slot``; None for pay-as-produced (metered)."""
        if self.shape is Shape.BASELOAD:
            return self.baseload_wh
        if self.shape is Shape.PROFILE:
            return self.profile_wh[(slot % SECONDS_PER_DAY) // self.slot_length_s]
        return None


def _problem(t: PpaTerms) -> str:
    if t.template != TEMPLATE_ID:
        return f"template {t.template!r} is not {TEMPLATE_ID}"
    if not _is_line(t.name, MAX_NAME) or not t.name:
        return "the name is one line of printable ASCII"
    if t.seller == t.buyer:
        return "seller and buyer are two different accounts"
    if SECONDS_PER_DAY % t.slot_length_s:
        return "the slot length divides a day"
    if t.start_slot % t.slot_length_s or t.end_slot % t.slot_length_s:
        return "start and end are slot starts"
    if not t.start_slot < t.end_slot <= t.start_slot + MAX_TERM_S:
        return "the term ends after it starts and lasts at most thirty years"
    shaped = {Shape.PAY_AS_PRODUCED: (t.generator != b"" or t.share_ppm or t.exclusive),
              Shape.BASELOAD: t.baseload_wh, Shape.PROFILE: t.profile_wh}
    if any(value for shape, value in shaped.items() if shape is not t.shape):
        return f"a {t.shape.value} contract leaves the other shapes' parameters empty"
    if t.shape is Shape.PAY_AS_PRODUCED and (t.generator != t.seller or not 0 < t.share_ppm <= PPM):
        return "a pay-as-produced share is of the seller's own metered generator, above 0 and at most 100 %"
    if t.shape is Shape.BASELOAD and t.baseload_wh <= 0:
        return "a baseload contract delivers a positive Wh per slot"
    if t.shape is Shape.PROFILE and (len(t.profile_wh) != t.slots_per_day or not any(t.profile_wh)
                                     or any(not 0 <= wh <= MAX_QTY_WH for wh in t.profile_wh)):
        return f"a profile gives {t.slots_per_day} non-negative Wh values (one per slot of a day), not all 0"
    if t.index_name and (not re.fullmatch(INDEX_NAME_PATTERN, t.index_name) or t.index_base <= 0):
        return "an indexed price names a reference (lower-case letters, digits, '.', '-') and its base value > 0"
    if not t.index_name and t.index_base:
        return "an index base without an index"
    if (t.shortfall is Shortfall.PENALTY) != (t.penalty_uc_per_kwh > 0):
        return "a shortfall penalty is set exactly when the shortfall rule is 'penalty'"
    return ""


def _is_line(text: str, max_len: int) -> bool:
    return len(text) <= max_len and all(" " <= c <= "~" for c in text)


# --- the canonical text ----------------------------------------------------------------------

def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _percent(ppm: int) -> str:
    return f"{ppm // 10_000}.{ppm % 10_000:04d} %"


def _price(uc_per_kwh: int) -> str:
    return f"{format_credits(uc_per_kwh)} credits per kWh ({uc_per_kwh} uc/kWh)"


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    return f"{days} days" if rest == 0 else f"{seconds} seconds"


def _clock(second_of_day: int) -> str:
    return f"{second_of_day // 3600:02d}:{second_of_day % 3600 // 60:02d}"


def render_terms(terms: PpaTerms) -> str:
    """The contract's canonical text (module docstring): what people read and both parties sign."""
    t = terms
    lines = [
        f"# Power purchase agreement: {t.name}",
        "",
        f"Template: {t.template}",
        "",
        "## 1. Parties",
        "",
        f"- Seller: `{t.seller.hex()}`",
        f"- Buyer: `{t.buyer.hex()}`",
        f"- Zone: `{t.zone}`",
        "",
        "## 2. Term",
        "",
        f"The Seller delivers energy to the Buyer in every settlement slot of {t.slot_length_s} seconds from "
        f"{_when(t.start_slot)} (slot {t.start_slot}) until {_when(t.end_slot)} (slot {t.end_slot}, excluded).",
        "",
        "## 3. Quantity",
        "",
    ]
    if t.shape is Shape.PAY_AS_PRODUCED:
        lines += [
            f"Pay as produced: in each slot the Buyer buys {_percent(t.share_ppm)} ({t.share_ppm} millionths, "
            f"rounded down to whole Wh) of the energy that the generator `{t.generator.hex()}` exports, as its own "
            "certified meter reading of that slot shows. A slot without a certified reading delivers nothing.",
            "",
            ("This share is exclusive: the Seller grants no exclusive shares of this generator that overlap in time "
             "and exceed 100 % together." if t.exclusive else "This share is not exclusive."),
        ]
    elif t.shape is Shape.BASELOAD:
        lines.append(f"Baseload: the Seller delivers {t.baseload_wh} Wh in each slot.")
    else:
        lines += ["Shaped profile: the Seller delivers, in each slot starting at the UTC time of day below:", "",
                  "| slot start (UTC) | Wh |", "| --- | --- |"]
        lines += [f"| {_clock(i * t.slot_length_s)} | {wh} |" for i, wh in enumerate(t.profile_wh)]
    lines += ["", "## 4. Price", ""]
    if t.index_name:
        lines.append(
            f"The Buyer pays {_price(t.price_uc_per_kwh)}, indexed to the reference `{t.index_name}` with base value "
            f"{t.index_base}: the price of a slot is this price times the latest value of `{t.index_name}` the zone "
            f"operator published at or before the slot, divided by {t.index_base}, rounded down to whole uc/kWh.")
    else:
        lines.append(f"The Buyer pays {_price(t.price_uc_per_kwh)}, fixed for the whole term.")
    lines += [
        "The value of a slot's position is its Wh times its price divided by 1000, rounded down to whole uc.",
        "",
        "## 5. Origin",
        "",
        ("Green: the certificates of the delivered Wh move to the Buyer, as far as the Seller's own metered green "
         "generation of the slot covers them." if t.green else "No green certificates move with this energy."),
        "",
        "## 6. Settlement",
        "",
        "Each slot's position is settled by the zone's settlement like a trade, against metered delivery. "
        + ("The Seller's metered export covers this agreement before its spot sales of the same slot."
           if t.priority_over_spot else
           "The Seller's metered export covers this agreement pro rata with its spot sales of the same slot."),
        "",
    ]
    if t.shortfall is Shortfall.PENALTY:
        lines.append(f"Shortfall: the Buyer pays for the whole position; the Seller pays the zone's shortfall price for "
                     f"every Wh it did not deliver, and pays the Buyer a penalty of {_price(t.penalty_uc_per_kwh)} "
                     "for each such Wh.")
    else:
        lines.append("Shortfall: the Buyer pays for the whole position; the Seller pays the zone's shortfall price "
                     "for every Wh it did not deliver.")
    lines += [
        "Surplus: energy the Seller exports beyond its positions remains the Seller's (its spot sales, then feed-in).",
        "",
        "## 7. Termination",
        "",
        f"Either party may terminate this agreement by a ledger entry with at least {_duration(t.notice_s)} "
        f"({t.notice_s} seconds) notice; it ends at the first slot named in the termination. The terminating party "
        f"pays the other {format_credits(t.termination_penalty_uc)} credits ({t.termination_penalty_uc} uc).",
        "",
        "## 8. Execution",
        "",
        "The SHA-256 hash of this text, as UTF-8 bytes, identifies this agreement. The offer and the acceptance "
        "on the zone's ledger name that hash and are signed by the parties' account keys.",
        "",
    ]
    return "\n".join(lines)


def terms_text_bytes(terms: PpaTerms) -> bytes:
    return render_terms(terms).encode("ascii")


def terms_hash(terms: PpaTerms) -> bytes:
    """The contract's id: SHA-256 of its canonical text."""
    return hashlib.sha256(terms_text_bytes(terms)).digest()


# --- the TOML template ----------------------------------------------------------------------

TEMPLATE_TOML = """\
# p2pgrid power purchase agreement (template p2pgrid-ppa/1). Fill in every value, then
# `p2pgrid ppa draft FILE` prints the contract text and the hash both parties sign.
[ppa]
name = "Station output to the community, 10 years"
seller = "<seller account, 64 hex digits>"
buyer = "<buyer account, 64 hex digits>"
zone = "<zone>"
slot_length_s = 900
start = "2027-01-01T00:00:00Z"
end = "2037-01-01T00:00:00Z"
green = true
priority_over_spot = true

[ppa.shape]
kind = "pay_as_produced"        # or "baseload" (baseload_wh = 500) or "profile" (profile_wh = [...])
generator = "<seller account>"  # pay-as-produced: the seller's own metered account
share_percent = "25"
exclusive = true

[ppa.price]
credits_per_kwh = "0.12"
# index = "cpi-zone"            # optional: indexed to a reference the zone operator publishes
# index_base = 1000

[ppa.shortfall]
settlement = "imbalance"        # or "penalty" with penalty_credits_per_kwh = "0.05"

[ppa.termination]
notice_days = 90
penalty_credits = "500"
"""


def parse_terms_toml(text: str) -> PpaTerms:
    """The terms of a filled template (``TEMPLATE_TOML``); ``InvalidTerms`` says what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidTerms(f"not TOML: {exc}") from None
    ppa = _table(doc, "ppa")
    shape = _table(ppa, "shape")
    price = _table(ppa, "price")
    shortfall = _table(ppa, "shortfall", required=False)
    termination = _table(ppa, "termination", required=False)
    kind = _get(shape, "kind", str)
    try:
        shape_kind = Shape(kind)
        shortfall_kind = Shortfall(_get(shortfall, "settlement", str, "imbalance"))
    except ValueError as exc:
        raise InvalidTerms(f"PPA terms: {exc}") from None
    slot_length = _get(ppa, "slot_length_s", int, 900)
    return PpaTerms(
        template=TEMPLATE_ID, name=_get(ppa, "name", str), seller=_account(ppa, "seller"),
        buyer=_account(ppa, "buyer"), zone=_get(ppa, "zone", str), slot_length_s=slot_length,
        start_slot=_instant(ppa, "start"), end_slot=_instant(ppa, "end"), shape=shape_kind,
        generator=_account(shape, "generator") if shape_kind is Shape.PAY_AS_PRODUCED else b"",
        share_ppm=_ppm(_get(shape, "share_percent", str)) if shape_kind is Shape.PAY_AS_PRODUCED else 0,
        exclusive=_get(shape, "exclusive", bool, False) if shape_kind is Shape.PAY_AS_PRODUCED else False,
        baseload_wh=_get(shape, "baseload_wh", int) if shape_kind is Shape.BASELOAD else 0,
        profile_wh=tuple(_get(shape, "profile_wh", list)) if shape_kind is Shape.PROFILE else (),
        price_uc_per_kwh=_credits(price, "credits_per_kwh"), index_name=_get(price, "index", str, ""),
        index_base=_get(price, "index_base", int, 0), green=_get(ppa, "green", bool, False),
        priority_over_spot=_get(ppa, "priority_over_spot", bool, True), shortfall=shortfall_kind,
        penalty_uc_per_kwh=_credits(shortfall, "penalty_credits_per_kwh", "0"),
        notice_s=_get(termination, "notice_days", int, 0) * SECONDS_PER_DAY,
        termination_penalty_uc=_credits(termination, "penalty_credits", "0"))


def _table(doc: dict[str, Any], name: str, required: bool = True) -> dict[str, Any]:
    value = doc.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidTerms(f"PPA terms: missing table [{name}]")
    return value


_MISSING = object()


def _get(table: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    value = table.get(key, default)
    if value is _MISSING:
        raise InvalidTerms(f"PPA terms: missing {key}")
    if type(value) is not kind:
        raise InvalidTerms(f"PPA terms: {key} must be a {kind.__name__}, got {value!r}")
    if kind is list and any(type(v) is not int for v in value):
        raise InvalidTerms(f"PPA terms: {key} must be a list of whole Wh")
    return value


def _account(table: dict[str, Any], key: str) -> bytes:
    text = _get(table, key, str)
    try:
        account = bytes.fromhex(text)
    except ValueError:
        raise InvalidTerms(f"PPA terms: {key} must be an account in hex, got {text!r}") from None
    if len(account) != PUBLIC_KEY_SIZE:
        raise InvalidTerms(f"PPA terms: {key} must be 32 bytes (64 hex digits)")
    return account


def _instant(table: dict[str, Any], key: str) -> int:
    text = _get(table, key, str)
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text):
        raise InvalidTerms(f"PPA terms: {key} must be a UTC time like 2027-01-01T00:00:00Z, got {text!r}")
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def _credits(table: dict[str, Any], key: str, default: Any = _MISSING) -> int:
    text = _get(table, key, str, default)
    try:
        return credits(text)
    except ValueError as exc:
        raise InvalidTerms(f"PPA terms: {key}: {exc}") from None


def _ppm(text: str) -> int:
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 4:
        raise InvalidTerms(f"PPA terms: share_percent is a decimal with at most 4 decimals, got {text!r}")
    return int(whole) * 10_000 + int(frac.ljust(4, "0") or "0")

