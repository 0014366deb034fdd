"""PII masking: e-mail addresses, phone numbers, IP addresses, Chinese resident ID numbers and
bank-card numbers become ``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<CN_ID>``, ``<BANK_CARD>``.

A pattern only proposes a candidate; numbers are masked only when they check out, so that the
long numbers SFT data is full of (sums, IDs of other kinds, prices, years, versions) stay:

* CN_ID: 18 characters, a real province code, a valid birth date from 1900 to 2099, and the
  ISO 7064 MOD 11-2 check character (GB 11643). One random 18-digit number in eleven passes the
  check alone; with the province and the date as well, about one in 50,000 does (measured).
* BANK_CARD: 13 to 19 digits, contiguous or in groups of four (Amex: 4-6-5) joined by one kind of
  separator, a first digit 2-6 (Mastercard 2-series, Amex/JCB/Diners, Visa, Mastercard,
  UnionPay/Discover: the issuers' major industry identifiers), a valid Luhn checksum, and not a
  run of keys (one block repeated, or constant steps: "4567890145678901", "1234567890123").
  One random number in ten passes Luhn, so an 18-digit number that fails the ID check is still
  masked as a card when it starts with 2-6 and passes Luhn (UnionPay issues 18-digit cards).
* PHONE: "+" and a country code, 8 to 15 digits in all (E.164), with spaces, hyphens or a
  parenthesised area code between groups, the "+" not right after a letter, digit or ")" (so
  ``18+15=33`` and ``x+12345678`` are arithmetic); or a Chinese mobile number 1[3-9]X XXXX XXXX
  (11 digits, optionally "+86"/"0086"/"86-" in front, spaces or hyphens between the groups). Not
  covered: national numbers without "+" outside China ("(415) 555-0132"), and dots as separators
  ("+1.415.555.0132", too easily a decimal).
* IP: IPv4 dotted quads and IPv6 addresses that :mod:`ipaddress` parses and calls global, IPv6
  also inside 2000::/3 (global unicast). Private, loopback, link-local, documentation (192.0.2.0/24,
  203.0.113.0/24, 2001:db8::/32) and other special ranges stay: they identify no one, and
  127.0.0.1 or 192.168.1.1 in a how-to must survive. A dotted quad right after "version", "ver.",
  "release", "版本" or a letter ("v1.2.3.4") is a version number, not an address; a bare global
  quad such as 1.2.3.4 is still masked (an address and a version look the same).
* EMAIL: local@domain.tld with an ASCII local part and a letter TLD of 2+ characters.

Masks apply to all of a message, code included: an address in a code block is still personal.
Digits are ASCII only: full-width digits are seen after unicode: NFKC.
"""

from __future__ import annotations

import datetime
import ipaddress
import re

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "cn_id": "<CN_ID>",
                "bank_card": "<BANK_CARD>"}
# Applied in this order: an e-mail may hold a phone number, an ID may hold a mobile-like run.
ORDER = ("email", "cn_id", "bank_card", "phone", "ip")

_NB = r"(?<![0-9A-Za-z_])"     # no ASCII word character before
_NA = r"(?![0-9A-Za-z_])"      # ... or after (CJK text around a number is fine)

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")

# ------------------------------------------------------------------------------------------ CN ID

_CN_ID = re.compile(_NB + r"\d{17}[\dXx]" + _NA)
_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
              53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
_ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2


def cn_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits ("X" stands for 10)."""
    r = (12 - sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11) % 11
    return "X" if r == 10 else str(r)


def is_cn_id(s: str) -> bool:
    if len(s) != 18 or not s[:17].isdigit() or int(s[:2]) not in _PROVINCES:
        return False
    try:
        born = datetime.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return 1900 <= born.year <= 2099 and cn_id_check_char(s[:17]) == s[17].upper()


# -------------------------------------------------------------------------------------- bank cards

_NOT_DECIMAL_BEFORE = r"(?<!\d[.,])"
_NOT_DECIMAL_AFTER = r"(?![.,]\d)"
_CARD = re.compile(_NB + _NOT_DECIMAL_BEFORE +
                   r"(?:\d{13,19}|\d{4}(?P<sep>[ \-])\d{4}(?:(?P=sep)\d{4}){1,2}(?:(?P=sep)\d{1,4})?"
                   r"|\d{4}(?P<sep2>[ \-])\d{6}(?P=sep2)\d{4,5})" + _NA + _NOT_DECIMAL_AFTER)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        k = int(d)
        if i % 2:
            k = k * 2 - 9 if k > 4 else k * 2
        total += k
    return total % 10 == 0


def _typed_pattern(digits: str) -> bool:
    """A run of keys rather than a number: one block repeated ("4567890145678901", "0000...") or
    steps of one size ("1234567890123", "9876...")."""
    n = len(digits)
    if any(digits == (digits[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1)):
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in zip(digits, digits[1:])}
    return len(steps) == 1


def is_bank_card(s: str) -> bool:
    digits = re.sub(r"[ \-]", "", s)
    return (13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)
            and not _typed_pattern(digits))


# ------------------------------------------------------------------------------------------ phones

_CN_MOBILE = re.compile(r"(?<![0-9A-Za-z_+])(?:(?:\+|00)86[ \-]?|86-)?1[3-9]\d(?:[ \-]?\d{4}){2}" + _NA)
_INTL = re.compile(r"(?<![0-9A-Za-z_)\]+])\+\d{1,3}(?:[ \-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}" + _NA
                   + _NOT_DECIMAL_AFTER)


def _intl_ok(s: str) -> bool:
    return 8 <= sum(c.isdigit() for c in s) <= 15


# --------------------------------------------------------------------------------------------- IPs

_IPV4 = re.compile(r"(?<![0-9A-Za-z_.])(?:\d{1,3}\.){3}\d{1,3}" + _NA + r"(?!\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Za-z_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|\d{1,3}(?:\.\d{1,3}){3})"
                   r"(?![0-9A-Za-z_:])")
_VERSION_BEFORE = re.compile(r"(?:(?<![A-Za-z])(?:version|ver\.?|release|rev\.?|v)|版本号?)\s*[:：]?\s*$",
                             re.IGNORECASE)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def is_public_ip(s: str) -> bool:
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return False
    if ip.version == 6 and ip not in _GLOBAL_UNICAST:
        return False
    return ip.is_global


# -------------------------------------------------------------------------------------------- mask

def _sub(pattern: re.Pattern, text: str, placeholder: str, ok) -> tuple[str, int]:
    n = 0

    def one(m: re.Match) -> str:
        nonlocal n
        if not ok(m, text):
            return m.group()
        n += 1
        return placeholder

    return pattern.sub(one, text), n


def _ipv4_ok(m: re.Match, text: str) -> bool:
    return is_public_ip(m.group()) and not _VERSION_BEFORE.search(text[max(0, m.start() - 12):m.start()])


_MASKERS = {
    "email": [(_EMAIL, lambda m, t: True)],
    "cn_id": [(_CN_ID, lambda m, t: is_cn_id(m.group()))],
    "bank_card": [(_CARD, lambda m, t: is_bank_card(m.group()))],
    "phone": [(_CN_MOBILE, lambda m, t: True), (_INTL, lambda m, t: _intl_ok(m.group()))],
    "ip": [(_IPV4, _ipv4_ok), (_IPV6, lambda m, t: is_public_ip(m.group()))],
}


def mask_pii(text: str, kind: str) -> tuple[str, int]:
    """Replace every ``kind`` ("email", "phone", "ip", "cn_id", "bank_card") in ``text`` by its
    placeholder; returns (text, number masked)."""
    total = 0
    for pattern, ok in _MASKERS[kind]:
        text, n = _sub(pattern, text, PLACEHOLDERS[kind], ok)
        total += n
    return text, total
