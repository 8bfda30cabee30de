"""The lookback window (pure): durations, times and UTC offsets as given on the command line, and
the naive date bounds Tradevine's filters are queried with."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway import wire

# Without TRADEVINE_ORG_UTC_OFFSET the API query is widened enough for any zone (UTC-12 … UTC+14);
# with it, by one hour either side for a daylight-saving change.
UNKNOWN_ZONE_MARGIN: Final = timedelta(hours=14)
DST_MARGIN: Final = timedelta(hours=1)

_DURATION_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d` or a combination such as `1h30m` → a positive timedelta."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit (d, h, m or s), "
                         "e.g. 90s, 30m, 2h, 1d or 1h30m.")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration; try 2h.")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time as aware UTC; without an offset it is read as UTC."""
    parsed = wire.parse_event_date(text.strip())
    if parsed is None:
        raise ValueError(f"{text!r} is not an ISO-8601 time; try 2025-03-18T21:00:00Z "
                         "(UTC when no offset is given).")
    return parsed


def parse_utc_offset(text: str) -> timedelta:
    """`+13:00`, `-05:30`, `+12`, `UTC+1300` → a timedelta within ±14 h."""
    match = _OFFSET.match(text.strip())
    if not match or int(match.group(3) or 0) >= 60:
        raise ValueError(f"{text!r} is not a UTC offset; try +13:00 (or -05:30).")
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    if offset > timedelta(hours=14):
        raise ValueError(f"{text!r} is outside -14:00..+14:00; try +13:00.")
    return -offset if sign == "-" else offset


def duration_text(delta: timedelta) -> str:
    seconds, parts = int(delta.total_seconds()), []
    for unit, size in _UNITS.items():
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class Window:
    """The real window, in UTC: `since <= ModifiedDate <= until`."""

    since: datetime
    until: datetime

    @classmethod
    def ending(cls, until: datetime, lookback: timedelta) -> Window:
        return cls(since=until - lookback, until=until)

    def contains(self, moment: datetime) -> bool:
        return self.since <= moment <= self.until

    def query_bounds(self, org_offset: timedelta | None) -> tuple[datetime, datetime]:
        """Naive bounds for Tradevine's date filters, which it reads in the organisation's zone."""
        since, until = self.since.astimezone(UTC), self.until.astimezone(UTC)
        if org_offset is None:
            low, high = since - UNKNOWN_ZONE_MARGIN, until + UNKNOWN_ZONE_MARGIN
        else:
            low, high = since + org_offset - DST_MARGIN, until + org_offset + DST_MARGIN
        # The API gets whole seconds: round the upper bound up.
        return low.replace(tzinfo=None), (high + timedelta(seconds=1)).replace(tzinfo=None)


def modified_at(obj: Mapping[str, object]) -> datetime | None:
    """An object's `ModifiedDate` (UTC, sent without an offset) or None when absent or unreadable."""
    return wire.parse_event_date(obj.get("ModifiedDate"))

