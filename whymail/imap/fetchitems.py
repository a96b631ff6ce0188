"""FETCH data items (RFC 3501 §6.4.5, RFC 7162 MODSEQ) as typed values."""

from __future__ import annotations

from dataclasses import dataclass

# Items without arguments; BODY here is the non-extensible BODYSTRUCTURE, not BODY[...].
SIMPLE_FETCH_ATTRS = frozenset(
    {
        "BODY",
        "BODYSTRUCTURE",
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "MODSEQ",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "UID",
    }
)

# RFC 3501 §6.4.5 macros, expanded by the parser (they may not be combined with other items).
FETCH_MACROS: dict[str, tuple[str, ...]] = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}

SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """A FETCH item without a section, e.g. FLAGS, ENVELOPE, RFC822.SIZE, UID, MODSEQ."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in SIMPLE_FETCH_ATTRS:
            raise ValueError(f"not a simple FETCH item: {self.name}")


@dataclass(frozen=True, slots=True)
class Section:
    """`[1.2.HEADER.FIELDS (From To)]`: MIME part path, optional text specifier and field names."""

    parts: tuple[int, ...] = ()
    text: str | None = None  # one of SECTION_TEXTS, or None for the whole part
    fields: tuple[str, ...] = ()  # only for HEADER.FIELDS / HEADER.FIELDS.NOT

    def __post_init__(self) -> None:
        if self.text is not None and self.text not in SECTION_TEXTS:
            raise ValueError(f"unknown section text {self.text}")
        if self.text == "MIME" and not self.parts:
            raise ValueError("MIME needs a part number (RFC 3501 §6.4.5)")
        if (self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")) != bool(self.fields):
            raise ValueError("HEADER.FIELDS[.NOT] and only they carry a non-empty field list")
        if any(p < 1 for p in self.parts):
            raise ValueError("part numbers start at 1")


@dataclass(frozen=True, slots=True)
class BodySection:
    """`BODY[section]<origin.size>` or `BODY.PEEK[...]` (PEEK does not set \\Seen)."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, octet count)


FetchItem = FetchAttr | BodySection
