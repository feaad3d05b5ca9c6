"""Language facts (code → English name, native name, script): the one place they live."""

from __future__ import annotations

from dataclasses import dataclass

from polyrise.errors import PolyriseError


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    native: str
    script: str


_TABLE = [
    ("ar", "Arabic", "العربية", "Arab"),
    ("bn", "Bengali", "বাংলা", "Beng"),
    ("ca", "Catalan", "Català", "Latn"),
    ("cs", "Czech", "Čeština", "Latn"),
    ("da", "Danish", "Dansk", "Latn"),
    ("de", "German", "Deutsch", "Latn"),
    ("el", "Greek", "Ελληνικά", "Grek"),
    ("en", "English", "English", "Latn"),
    ("es", "Spanish", "Español", "Latn"),
    ("et", "Estonian", "Eesti", "Latn"),
    ("fa", "Persian", "فارسی", "Arab"),
    ("fi", "Finnish", "Suomi", "Latn"),
    ("fr", "French", "Français", "Latn"),
    ("he", "Hebrew", "עברית", "Hebr"),
    ("hi", "Hindi", "हिन्दी", "Deva"),
    ("hu", "Hungarian", "Magyar", "Latn"),
    ("id", "Indonesian", "Bahasa Indonesia", "Latn"),
    ("it", "Italian", "Italiano", "Latn"),
    ("ja", "Japanese", "日本語", "Jpan"),
    ("ko", "Korean", "한국어", "Kore"),
    ("mr", "Marathi", "मराठी", "Deva"),
    ("ne", "Nepali", "नेपाली", "Deva"),
    ("nl", "Dutch", "Nederlands", "Latn"),
    ("no", "Norwegian", "Norsk", "Latn"),
    ("pl", "Polish", "Polski", "Latn"),
    ("pt", "Portuguese", "Português", "Latn"),
    # Cloned languages of the sandbox (`polyrise.sandbox.world`): codes from ISO 639's private-use range qaa-qtz.
    ("qaa", "Clonish A", "Clonish A", "Latn"),
    ("qab", "Clonish B", "Clonish B", "Latn"),
    ("ro", "Romanian", "Română", "Latn"),
    ("ru", "Russian", "Русский", "Cyrl"),
    ("sv", "Swedish", "Svenska", "Latn"),
    ("sw", "Swahili", "Kiswahili", "Latn"),
    ("ta", "Tamil", "தமிழ்", "Taml"),
    ("te", "Telugu", "తెలుగు", "Telu"),
    ("th", "Thai", "ไทย", "Thai"),
    ("tr", "Turkish", "Türkçe", "Latn"),
    ("uk", "Ukrainian", "Українська", "Cyrl"),
    ("ur", "Urdu", "اردو", "Arab"),
    ("vi", "Vietnamese", "Tiếng Việt", "Latn"),
    ("zh", "Chinese", "中文", "Hans"),
]

LANGUAGES: dict[str, Language] = {row[0]: Language(*row) for row in _TABLE}


class UnknownLanguageError(PolyriseError, ValueError):
    """A language code polyrise has no facts for."""


def get_language(code: str) -> Language:
    """Return the facts for an ISO 639-1 code; the error lists every known code."""
    try:
        return LANGUAGES[code]
    except KeyError:
        known = ", ".join(sorted(LANGUAGES))
        raise UnknownLanguageError(f"unknown language code {code!r}; known codes: {known}") from None
