"""Personal data as a person might type it into a free-text field, and how to find it in what a
topic holds: a 16-digit NIK, an Indonesian mobile number (+62 / 62 / 0, then 8...), an e-mail."""

from __future__ import annotations

import re

NIK = "3201014506990001"
PHONE = "+6281234567890"
LOCAL_PHONE = "081298765432"
EMAIL = "siti.aminah@example.id"
TYPED = f"Siti {NIK} {LOCAL_PHONE} {PHONE} {EMAIL}"
PATTERNS = (re.compile(r"(?<![0-9A-Za-z])\d{16}(?![0-9A-Za-z])"),
            re.compile(r"(?<![0-9A-Za-z])(?:\+62|62|0)\s?8\d{7,11}(?![0-9A-Za-z])"),
            re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"))


def personal_data_in(text: str) -> list[str]:
    return [m.group(0) for pattern in PATTERNS for m in pattern.finditer(text)]
