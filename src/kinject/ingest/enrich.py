"""Dates and units made searchable: ISO-8601 dates and metric units written beside the original.

"May 1, 2023" becomes "May 1, 2023 (2023-05-01)", "2023年5月" becomes "2023年5月 (2023-05)",
"12 mi" becomes "12 mi (19.3 km)" and "5公斤" becomes "5公斤 (5 kg)". The original is never
replaced, so quotes stay exact, and a question in either form finds the passage. Every
function is idempotent: text that already carries its annotation gets nothing more.

Numeric dates are recognised only year first (``2023/5/1``, ``2023-5-1``): ``5/1/2023`` means
May 1 in the US and January 5 elsewhere, and a wrong date is worse than none. Impossible
dates (``2023年2月30日``) are left alone, and so is everything inside a fenced code block.
"""

from __future__ import annotations

import datetime as dt
import re

from kinject.ingest.codeblocks import map_prose

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"[12]\d{3}(?!\d)"
_DATE = re.compile(
    rf"\b(?P<m1>{_MONTH})\s+(?P<d1>{_DAY}),?\s+(?P<y1>{_YEAR})"  # May 1, 2023
    rf"|\b(?P<d2>{_DAY})\s+(?P<m2>{_MONTH}),?\s+(?P<y2>{_YEAR})"  # 1 May 2023
    rf"|\b(?P<m3>{_MONTH})\s+(?P<y3>{_YEAR})"  # May 2023
    r"|(?<![\d/-])(?P<y4>[12]\d{3})(?P<sep>[/-])(?P<m4>\d{1,2})(?P=sep)(?P<d4>\d{1,2})"
    r"(?![\d/])"  # 2023/5/1, 2023-05-01
    r"|(?<!\d)(?P<y5>[12]\d{3})\s*年\s*(?P<m5>\d{1,2})\s*月(?:\s*(?P<d5>\d{1,2})\s*[日号])?"
)
# An annotation this module wrote already: " (2023-05-01)", " (19.3 km)", "（5 kg）".
_ANNOTATED = re.compile(
    r"\s*[(（]\s*-?[\d.,]+(?:-\d\d){0,2}(?:\s*[^\s()（）\d][^()（）]{0,5})?[)）]"
)

_CLOSES = re.compile(r"\s*[)）]")
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# alias -> (target unit, factor). Longest aliases are tried first ("公里" before "里").
_UNITS: dict[str, tuple[str, float]] = {
    "km": ("km", 1), "kilometres": ("km", 1), "kilometers": ("km", 1), "kilometre": ("km", 1),
    "kilometer": ("km", 1), "公里": ("km", 1), "千米": ("km", 1),
    "mi": ("km", 1.609344), "miles": ("km", 1.609344), "mile": ("km", 1.609344),
    "英里": ("km", 1.609344),
    "m": ("m", 1), "metres": ("m", 1), "meters": ("m", 1), "metre": ("m", 1),
    "meter": ("m", 1), "米": ("m", 1),
    "cm": ("cm", 1), "centimetres": ("cm", 1), "centimeters": ("cm", 1), "厘米": ("cm", 1),
    "mm": ("mm", 1), "millimetres": ("mm", 1), "millimeters": ("mm", 1), "毫米": ("mm", 1),
    "ft": ("m", 0.3048), "feet": ("m", 0.3048), "foot": ("m", 0.3048), "英尺": ("m", 0.3048),
    "inches": ("cm", 2.54), "inch": ("cm", 2.54), "英寸": ("cm", 2.54),
    "kg": ("kg", 1), "kilograms": ("kg", 1), "kilogram": ("kg", 1), "公斤": ("kg", 1),
    "千克": ("kg", 1), "斤": ("kg", 0.5),
    "g": ("g", 1), "grams": ("g", 1), "gram": ("g", 1), "克": ("g", 1),
    "lb": ("kg", 0.45359237), "lbs": ("kg", 0.45359237), "pounds": ("kg", 0.45359237),
    "pound": ("kg", 0.45359237), "磅": ("kg", 0.45359237),
    "oz": ("g", 28.349523125), "ounces": ("g", 28.349523125), "ounce": ("g", 28.349523125),
    "盎司": ("g", 28.349523125),
    "t": ("t", 1), "tonnes": ("t", 1), "tonne": ("t", 1), "吨": ("t", 1),
    "L": ("L", 1), "litres": ("L", 1), "liters": ("L", 1), "litre": ("L", 1),
    "liter": ("L", 1), "升": ("L", 1), "mL": ("mL", 1), "ml": ("mL", 1), "毫升": ("mL", 1),
    "gal": ("L", 3.785411784), "gallons": ("L", 3.785411784), "gallon": ("L", 3.785411784),
    "°C": ("°C", 1), "摄氏度": ("°C", 1), "°F": ("°C", 1), "degrees Fahrenheit": ("°C", 1),
    "华氏度": ("°C", 1),
}  # fmt: skip
_FAHRENHEIT = frozenset({"°F", "degrees Fahrenheit", "华氏度"})
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_UNIT = re.compile(
    # Not inside a word, an identifier or an amount of money ("A4", "$5 m").
    rf"(?<![A-Za-z0-9_.,$€£¥-])(?P<a>{_NUMBER})(?:\s*(?P<dash>[-–~～至到])\s*(?P<b>{_NUMBER}))?"
    rf"\s*(?P<unit>{_UNIT_ALT})(?![A-Za-z0-9²])"
)


def _date_iso(m: re.Match[str]) -> str | None:
    """The ISO form of a matched date, or None for an impossible one."""
    g = m.groupdict()
    day: str | None
    if g["y1"]:
        year, month, day = g["y1"], g["m1"], g["d1"]
    elif g["y2"]:
        year, month, day = g["y2"], g["m2"], g["d2"]
    elif g["y3"]:
        year, month, day = g["y3"], g["m3"], None
    elif g["y4"]:
        year, month, day = g["y4"], g["m4"], g["d4"]
    else:
        year, month, day = g["y5"], g["m5"], g["d5"]
    month_no = int(month) if month.isdigit() else _MONTHS[month[:3].lower()]
    try:
        date = dt.date(int(year), month_no, int(re.sub(r"\D", "", day)) if day else 1)
    except ValueError:
        return None
    return date.isoformat() if day else date.isoformat()[:7]


def annotate_dates(text: str) -> str:
    """Write each recognised date's ISO-8601 form beside it: "2023年5月1日 (2023-05-01)"."""

    def render(m: re.Match[str]) -> str:
        iso = _date_iso(m)
        if iso is None or iso == m.group() or _ANNOTATED.match(text, m.end()):
            return m.group()
        return f"{m.group()} ({iso})"

    return _DATE.sub(render, text)


def _fmt(value: float) -> str:
    """A converted amount: three significant figures below 100, whole numbers above."""
    if abs(value) >= 100:
        return str(round(value))
    out = f"{value:.3g}"
    return "0" if out == "-0" else out


def _convert(number: str, unit: str) -> str:
    target, factor = _UNITS[unit]
    if unit in _FAHRENHEIT:
        return _fmt((float(number.replace(",", "")) - 32) * 5 / 9)
    if factor == 1:
        return number
    return _fmt(float(number.replace(",", "")) * factor)


def annotate_units(text: str) -> str:
    """Write the metric form of each recognised amount beside it: "12 mi (19.3 km)".

    Amounts already in the target unit ("5 km", "5km") are left alone; Chinese and spelled-out
    units get the symbol ("5公斤 (5 kg)"); ranges convert both ends ("5-10 mi (8.05-16.1 km)").
    """

    def render(m: re.Match[str]) -> str:
        unit = m.group("unit")
        target = _UNITS[unit][0]
        amount = _convert(m.group("a"), unit)
        if m.group("b"):
            amount += "-" + _convert(m.group("b"), unit)
        canonical = f"{amount} {target}"
        if text[m.start() - 1 : m.start()] in ("(", "（") and _CLOSES.match(text, m.end()):
            return m.group()  # the author's own conversion: "5 mi (8 km)"
        if canonical.replace(" ", "") == m.group().replace(" ", "") or _ANNOTATED.match(
            text, m.end()
        ):
            return m.group()
        return f"{m.group()} ({canonical})"

    return _UNIT.sub(render, text)


def enrich_text(text: str) -> str:
    """Dates, then units, outside code blocks (a date in a shell transcript or a number in
    code is quoted, not prose). Run it after ``normalise_text``; running it twice changes
    nothing."""
    return map_prose(text, lambda prose: annotate_units(annotate_dates(prose)))
