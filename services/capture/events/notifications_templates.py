"""Shopper messages from Jinja2 templates: `templates/<locale>/<template>.{subject,txt,html}.j2`.

A locale without a template falls back to its language ("de-AT" → "de"), then to the
deployment's default. HTML is autoescaped (a tracking number or a name is text, never markup);
the subject and the text body are plain text and are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Rendered:
    """A message's words: the locale actually used, subject, text and HTML bodies."""

    locale: str
    subject: str
    text: str
    html: str


class Templates:
    """Renders a template in a locale, falling back to the default locale."""

    def __init__(self, default_locale: str, directory: Path = TEMPLATE_DIR) -> None:
        self._default = default_locale.lower()
        self._directory = directory
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(directory),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            # A template naming a value the event did not give fails loudly, not blank.
            undefined=jinja2.StrictUndefined,
        )
        if not self.has(self._default, "order_confirmed"):
            raise ValueError(f"no templates for the default locale {default_locale!r}")

    def has(self, locale: str, template: str) -> bool:
        """True when `template` exists in exactly `locale`."""
        return (self._directory / locale / f"{template}.subject.j2").is_file()

    def locale_for(self, locale: str, template: str) -> str:
        """The locale `template` is rendered in for a shopper who wants `locale`."""
        wanted = locale.strip().lower().replace("_", "-")
        for candidate in (wanted, wanted.partition("-")[0]):
            # Locale names come from requests: only plain names reach the file system.
            if candidate and candidate.replace("-", "").isalnum() and self.has(candidate, template):
                return candidate
        return self._default

    def render(self, template: str, locale: str, params: dict[str, Any]) -> Rendered:
        """`template` in `locale` (or its fallback) with `params`."""
        used = self.locale_for(locale, template)

        def one(part: str) -> str:
            return self._env.get_template(f"{used}/{template}.{part}.j2").render(**params)

        html = one("html") if (self._directory / used / f"{template}.html.j2").is_file() else ""
        subject = " ".join(one("subject").split())  # one line, whatever the template holds
        return Rendered(used, subject, one("txt"), html)
