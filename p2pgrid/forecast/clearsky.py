"""A small clear-sky irradiance model in pure Python, for the PV forecasting expert.

Solar position: the NOAA low-precision formulas (fractional year γ, equation of time and
declination as Fourier series; error well under 1° in zenith), which is plenty for a shape
that is then scaled by the measured clear-sky index.

Clear-sky global horizontal irradiance: Haurwitz (1945), ``GHI = 1098 · cos z · exp(−0.057 /
cos z)`` W/m². On a tilted plane (tilt β from horizontal, azimuth A clockwise from north) we
split it into a beam share ``BEAM_SHARE`` that follows the angle of incidence and an isotropic
diffuse rest::

    POA = BEAM_SHARE · 1098 · exp(−0.057 / cos z) · max(0, cos AOI)
        + (1 − BEAM_SHARE) · GHI · (1 + cos β) / 2

Slots are represented by their midpoint. Only the *shape* matters to the forecaster: the level
comes from the ratio of measured PV to this model (the clear-sky index).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

BEAM_SHARE = 0.8
SECONDS_PER_DAY = 86400
UNIX_DAY_OF_2000_01_01 = 10957


@dataclass(frozen=True)
class PvSite:
    """Where a PV array is and how it faces. Degrees; azimuth clockwise from north (180 = south)."""

    latitude: float
    longitude: float
    tilt: float = 30.0
    azimuth: float = 180.0


def _day_of_year_and_hour(utc_s: float) -> tuple[int, float, int]:
    """(day of year 1..366, UTC hour, days in that year) of a Unix instant."""
    days, seconds = divmod(utc_s, SECONDS_PER_DAY)
    # Civil-from-days (Howard Hinnant) to find the year of `days` since 1970-01-01.
    z = int(days) + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy_mar = doe - (365 * yoe + yoe // 4 - yoe // 100)
    month_index = (5 * doy_mar + 2) // 153
    month = month_index + 3 if month_index < 10 else month_index - 9
    if month <= 2:
        year += 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    jan1 = _days_from_civil(year, 1, 1)
    return int(days) - jan1 + 1, seconds / 3600.0, 366 if leap else 365


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def sun_vector(utc_s: float, latitude: float, longitude: float) -> tuple[float, float, float]:
    """Unit vector toward the sun as (east, north, up) at a Unix instant (seconds, UTC)."""
    day, hour, year_days = _day_of_year_and_hour(utc_s)
    gamma = 2 * math.pi / year_days * (day - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                       - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
            - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
            - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma))
    true_solar_min = hour * 60 + eqtime + 4 * longitude
    hour_angle = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(latitude)
    up = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    east = -math.cos(decl) * math.sin(hour_angle)
    north = math.cos(phi) * math.sin(decl) - math.sin(phi) * math.cos(decl) * math.cos(hour_angle)
    return east, north, up


def clear_sky_ghi(utc_s: float, latitude: float, longitude: float) -> float:
    """Haurwitz clear-sky global horizontal irradiance, W/m²."""
    cos_z = sun_vector(utc_s, latitude, longitude)[2]
    if cos_z <= 0.0:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.057 / cos_z)


@functools.lru_cache(maxsize=65536)
def clear_sky_poa(utc_s: float, site: PvSite) -> float:
    """Clear-sky irradiance on the array's plane, W/m² (see module doc)."""
    east, north, up = sun_vector(utc_s, site.latitude, site.longitude)
    if up <= 0.0:
        return 0.0
    beta, azimuth = math.radians(site.tilt), math.radians(site.azimuth)
    cos_aoi = (east * math.sin(beta) * math.sin(azimuth) + north * math.sin(beta) * math.cos(azimuth)
               + up * math.cos(beta))
    attenuation = 1098.0 * math.exp(-0.057 / up)
    beam = BEAM_SHARE * attenuation * max(0.0, cos_aoi)
    diffuse = (1 - BEAM_SHARE) * attenuation * up * (1 + math.cos(beta)) / 2
    return beam + diffuse


def slot_clear_sky(slot_start_s: int, slot_s: int, site: PvSite) -> float:
    """Clear-sky plane irradiance at the midpoint of a slot."""
    return clear_sky_poa(slot_start_s + slot_s / 2, site)
