"""HTML of received mail made safe to show in a webmail page (nh3, an allow-list sanitizer).

Scripts, styles blocks, event handlers and `javascript:` links go; remote content (an `http(s):` or
protocol-relative image source) is blocked, because loading it tells the sender when and where the
mail was read. `cid:` images can be pointed at our own attachment URLs instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import nh3

_EXTRA_TAGS = {"font", "tfoot", "th", "td", "tr", "table", "thead", "tbody", "caption", "center"}
_TAGS = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - {"script", "style"}
_COMMON_ATTRIBUTES = {"title", "dir", "lang", "style", "class", "width", "height", "align", "valign", "bgcolor"}
_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.setdefault("font", set()).update({"color", "face", "size"})
_ATTRIBUTES.setdefault("table", set()).update({"border", "cellpadding", "cellspacing"})
_ATTRIBUTES["*"] = _COMMON_ATTRIBUTES
# No `background`, `list-style-image`, `border-image` …: their url() values would load remote content.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "text-indent", "text-transform", "line-height", "letter-spacing",
    "white-space", "vertical-align", "direction", "margin", "margin-top", "margin-right", "margin-bottom",
    "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "width", "height", "max-width",
    "min-width", "max-height", "min-height", "display",
}
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_IMAGE_DATA = "data:image/"


@dataclass(frozen=True, slots=True)
class SanitizedHtml:
    html: str
    blocked_remote: int  # remote images removed


def sanitize_html(markup: str, cid_urls: Mapping[str, str] | None = None) -> SanitizedHtml:
    """Clean an HTML mail body; `cid_urls` maps a Content-ID (without <>) to the URL that serves it."""
    blocked = 0
    cids = cid_urls or {}

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        lowered = value.strip().lower()
        if attribute == "src":
            if lowered.startswith("cid:"):
                return cids.get(value.strip()[4:].strip("<>"))
            if lowered.startswith(_IMAGE_DATA):
                return value
            blocked += 1  # http(s), //host, relative or anything else: nothing leaves the page
            return None
        if attribute in ("href", "cite"):
            return value if lowered.startswith(_LINK_SCHEMES) or lowered.startswith("#") else None
        return value

    cleaned = nh3.clean(
        markup,
        tags=_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_ATTRIBUTES,
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=_STYLE_PROPERTIES,
        strip_comments=True,
    )
    return SanitizedHtml(cleaned, blocked)
