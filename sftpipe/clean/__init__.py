"""Clean: repair broken text and mask PII, between collect and dedup.

``text`` (mojibake via ftfy, line breaks, control and zero-width characters, Unicode
normalization, whitespace outside code fences), ``markup`` (HTML tags and character
references), ``pii`` (e-mail, phone, IP, Chinese ID and bank-card numbers, validated by
checksum), ``records`` (the rules in order, :func:`clean_text`, and the stage's
:func:`clean_records`: rows, the empty-after-clean ledger, metrics and examples).
"""

from .records import clean_records, clean_text, rules

__all__ = ["clean_records", "clean_text", "rules"]
