"""PV array physics (pure): from irradiance to AC power, with inverter clipping and curtailment.

Model (deliberately simple, after PVWatts' shape):

* **Sun position** from a low-precision solar ephemeris (declination, equation of time, hour
  angle; good to about a degree — plenty for kWh-per-slot forecasts).
* **Plane of array.** Global horizontal irradiance (GHI) is split into beam and diffuse by a fixed
  ``diffuse_fraction``; the beam is projected onto the tilted plane by the angle of incidence and
  the diffuse part is seen through the isotropic sky view factor ``(1 + cos tilt) / 2``. A caller
  that already has plane-of-array irradiance skips this.
* **DC → AC.** ``P = peak_w · G_poa / 1000 W/m² · performance_ratio`` (the ratio lumps
  temperature, wiring, soiling and inverter losses), then clipped at the inverter's rated AC
  power and at the curtailment limit, if one is set. Clipping is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2pgrid.errors import ConfigError

STC_IRRADIANCE_WM2 = 1000.0
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class PvArraySpec:
    """``peak_w``: nameplate DC power at STC (kWp × 1000). Azimuth in degrees clockwise from
    north (180 = south). ``inverter_rated_w`` defaults to ``peak_w``."""

    peak_w: float
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    performance_ratio: float = 0.85
    inverter_rated_w: float | None = None
    latitude_deg: float = 48.0
    longitude_deg: float = 11.0
    diffuse_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.peak_w <= 0:
            raise ConfigError("pv peak_w must be > 0")
        if not 0.0 <= self.tilt_deg <= 90.0:
            raise ConfigError("pv tilt_deg must be in [0, 90]")
        if not 0.0 < self.performance_ratio <= 1.0:
            raise ConfigError("pv performance_ratio must be in (0, 1]")
        if self.inverter_rated_w is not None and self.inverter_rated_w <= 0:
            raise ConfigError("pv inverter_rated_w must be > 0")
        if not 0.0 <= self.diffuse_fraction <= 1.0:
            raise ConfigError("pv diffuse_fraction must be in [0, 1]")

    @property
    def rated_w(self) -> float:
        return self.inverter_rated_w if self.inverter_rated_w is not None else self.peak_w


@dataclass(frozen=True)
class SunPosition:
    elevation_deg: float
    azimuth_deg: float


def solar_position(t_ms: int, latitude_deg: float, longitude_deg: float) -> SunPosition:
    """Where the sun stands at ``t_ms`` (UTC) seen from the given place."""
    day_of_year = (t_ms / MS_PER_DAY) % 365.2422  # days since 1 January (1970 is aligned)
    gamma = 2.0 * math.pi * day_of_year / 365.0
    declination = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
                   - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma))
    eot_min = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                        - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    utc_min = (t_ms % MS_PER_DAY) / 60_000.0
    solar_min = utc_min + eot_min + 4.0 * longitude_deg
    hour_angle = math.radians(solar_min / 4.0 - 180.0)
    lat = math.radians(latitude_deg)
    sin_el = (math.sin(lat) * math.sin(declination)
              + math.cos(lat) * math.cos(declination) * math.cos(hour_angle))
    elevation = math.asin(max(-1.0, min(1.0, sin_el)))
    azimuth = math.atan2(math.sin(hour_angle),
                         math.cos(hour_angle) * math.sin(lat)
                         - math.tan(declination) * math.cos(lat))
    return SunPosition(math.degrees(elevation), (math.degrees(azimuth) + 180.0) % 360.0)


def plane_of_array_wm2(ghi_wm2: float, sun: SunPosition, spec: PvArraySpec) -> float:
    """Irradiance on the array's plane from global horizontal irradiance."""
    if ghi_wm2 <= 0 or sun.elevation_deg <= 0:
        return 0.0
    zenith = math.radians(90.0 - sun.elevation_deg)
    tilt = math.radians(spec.tilt_deg)
    cos_incidence = (math.cos(zenith) * math.cos(tilt) + math.sin(zenith) * math.sin(tilt)
                     * math.cos(math.radians(sun.azimuth_deg - spec.azimuth_deg)))
    diffuse_h = ghi_wm2 * spec.diffuse_fraction
    beam_h = ghi_wm2 - diffuse_h
    # Beam normal irradiance from its horizontal share; cap the sunrise blow-up of 1/cos(zenith).
    beam_normal = beam_h / max(math.cos(zenith), 0.087)
    beam_poa = beam_normal * max(0.0, cos_incidence)
    diffuse_poa = diffuse_h * (1.0 + math.cos(tilt)) / 2.0
    return beam_poa + diffuse_poa


def pv_available_w(spec: PvArraySpec, poa_wm2: float) -> float:
    """AC power the array could deliver at plane-of-array irradiance ``poa_wm2``, before
    inverter clipping and curtailment."""
    return max(0.0, spec.peak_w * poa_wm2 / STC_IRRADIANCE_WM2 * spec.performance_ratio)


@dataclass(frozen=True)
class PvOutput:
    power_w: float
    available_w: float
    reason: str = ""

    @property
    def curtailed(self) -> bool:
        return self.power_w < self.available_w


def pv_output(spec: PvArraySpec, available_w: float, limit_w: float | None) -> PvOutput:
    """Clip the available power at the inverter rating and the curtailment limit."""
    power, reason = max(0.0, available_w), ""
    if power > spec.rated_w:
        power, reason = spec.rated_w, "inverter rating"
    if limit_w is not None and power > limit_w:
        power, reason = max(0.0, limit_w), "curtailment limit"
    return PvOutput(power, max(0.0, available_w), reason)
