"""DKIM (RFC 6376, Ed25519 per RFC 8463): key generation, signing and verification.

dkimpy does the canonicalization and the cryptography. Verification fetches each signature's key
record itself, through our `DnsResolver`, so the outcome can say *why* a signature did not pass:
a DNS timeout (temperror) is not a missing key (permerror) and neither is a broken signature (fail).
Ed25519 needs PyNaCl, which dkimpy imports when it is installed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import dataclass

import dkim as dkimpy
import idna
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import InvalidTagValueList, parse_tag_value

from whymail.dnsresolve import DnsNotFound, DnsResolver, DnsTempError

log = logging.getLogger(__name__)

ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

# RFC 6376 §5.4.1 recommends these; From is listed once more ("oversigned", §8.15) so that a second
# From added in transit breaks the signature instead of being displayed.
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: signers MUST use, verifiers MUST accept, at least 1024 bits

_TXT_CHUNK = 255  # one DNS character-string (RFC 1035 §3.3)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The verdict on one DKIM-Signature (or, with result "none", on an unsigned message)."""

    result: str  # pass, fail, neutral, temperror, permerror, or none when the message is unsigned
    domain: str = ""  # d=
    selector: str = ""  # s=
    header_b: str = ""  # the first 8 characters of b=, to tell signatures apart (RFC 6008)
    algorithm: str = ""  # a=
    identity: str = ""  # i= (the AUID)
    reason: str = ""


# --- keys -----------------------------------------------------------------------------------------


def generate_key(algorithm: str = "rsa", bits: int = 2048) -> tuple[str, str]:
    """A new signing key: (private key PEM, public key base64 for the p= tag of the DNS record)."""
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys shorter than {MIN_RSA_BITS} bits are not allowed (RFC 8301)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        # PKCS#1 ("BEGIN RSA PRIVATE KEY"): what dkimpy and OpenDKIM both read.
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        # RFC 6376 §3.6.1: p= is the base64 of the DER SubjectPublicKeyInfo.
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # RFC 8463 §4.2: p= is the base64 of the raw 32-byte public key, not an ASN.1 structure.
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise ValueError(f"unknown DKIM key algorithm {algorithm!r} (rsa or ed25519)")
    return private_pem.decode("ascii"), base64.b64encode(public).decode("ascii")


def dns_txt_record(selector: str, domain: str, algorithm: str, public_b64: str) -> str:
    """The zone-file line an operator publishes for the key, long values split into quoted strings
    of at most 255 characters (RFC 6376 §3.6.2.2: the strings are concatenated without spaces)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown DKIM key algorithm {algorithm!r} (rsa or ed25519)")
    value = f"v=DKIM1; k={algorithm}; p={public_b64}"
    chunks = [value[i : i + _TXT_CHUNK] for i in range(0, len(value), _TXT_CHUNK)]
    quoted = " ".join(f'"{chunk}"' for chunk in chunks)
    return f"{selector}._domainkey.{_a_label(domain)}. IN TXT {quoted}"


def _a_label(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    return idna.encode(domain, uts46=True).decode("ascii")


def _dkimpy_private_key(private_pem: str, algorithm: str) -> bytes:
    """The key in the form dkimpy wants: PKCS#1 PEM for RSA, the base64 raw seed for Ed25519."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    if algorithm == "rsa" and isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if algorithm == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw)
    raise ValueError(f"the private key is not an {algorithm} key")


# --- signing --------------------------------------------------------------------------------------


def _header_names(message: bytes) -> list[str]:
    """Lower-cased names of the header fields, in order (continuation lines skipped)."""
    names: list[str] = []
    for line in message.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon:
            names.append(name.strip().decode("ascii", "replace").lower())
    return names


def sign(message: bytes, *, domain: str, selector: str, private_pem: str, algorithm: str = "rsa") -> bytes:
    """The DKIM-Signature header field (folded, CRLF-terminated) to prepend to `message`:
    relaxed/relaxed, the usual header set, From oversigned."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown DKIM key algorithm {algorithm!r} (rsa or ed25519)")
    present = _header_names(message)
    if "from" not in present:
        raise ValueError("the message has no From header field (RFC 5322 §3.6)")
    # Each present instance is signed (bottom-up, RFC 6376 §5.4.2), plus one extra From.
    include = [name for name in present if name in SIGNED_HEADERS] + ["from"]
    return dkimpy.sign(
        message,
        selector.encode("ascii"),
        _a_label(domain).encode("ascii"),
        _dkimpy_private_key(private_pem, algorithm),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=ALGORITHMS[algorithm],
        include_headers=[name.encode("ascii") for name in include],
        linesep=b"\r\n",
    )


# --- verification ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Signature:
    index: int
    tags: dict[bytes, bytes]
    outcome: DkimResult | None = None  # decided before the crypto step (syntax, key trouble)
    key_record: str = ""


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def _describe(sig: _Signature, result: str, reason: str) -> DkimResult:
    tags = sig.tags
    return DkimResult(
        result=result,
        domain=_text(tags.get(b"d")).lower(),
        selector=_text(tags.get(b"s")),
        header_b=re.sub(r"\s+", "", _text(tags.get(b"b")))[:8],
        algorithm=_text(tags.get(b"a")),
        identity=_text(tags.get(b"i")),
        reason=reason,
    )


def _read_signatures(message: bytes, accept_rsa_sha1: bool) -> list[_Signature]:
    """Every DKIM-Signature of the message, parsed and checked for syntax (RFC 6376 §6.1.1)."""
    headers, _body = dkimpy.rfc822_parse(message)
    found: list[_Signature] = []
    for name, value in headers:
        if name.lower() != b"dkim-signature":
            continue
        sig = _Signature(index=len(found), tags={})
        found.append(sig)
        try:
            sig.tags = parse_tag_value(value)
        except InvalidTagValueList as exc:
            sig.outcome = _describe(sig, "neutral", f"signature syntax: {exc}")
            continue
        try:
            dkimpy.validate_signature_fields(sig.tags)
        except dkimpy.DKIMException as exc:
            sig.outcome = _describe(sig, "neutral", f"signature: {exc}")
            continue
        except (IndexError, KeyError, ValueError, TypeError) as exc:
            # dkimpy trips over some hostile input itself (an i= as long as d= without "@" raises
            # IndexError); the signature is malformed either way.
            sig.outcome = _describe(sig, "neutral", f"signature: malformed ({type(exc).__name__})")
            continue
        if sig.tags[b"a"] == b"rsa-sha1" and not accept_rsa_sha1:
            sig.outcome = _describe(sig, "permerror", "rsa-sha1 is not accepted (RFC 8301 §3.1)")
        elif b"from" not in [h.strip().lower() for h in sig.tags[b"h"].split(b":")]:
            sig.outcome = _describe(sig, "neutral", "From is not signed (RFC 6376 §5.4)")
    return found


async def _fetch_key(sig: _Signature, resolver: DnsResolver) -> None:
    """Find the key record of `sig` (RFC 6376 §3.6.2), or set the outcome that explains why not."""
    name = f"{_text(sig.tags[b's'])}._domainkey.{_text(sig.tags[b'd'])}"
    try:
        records = await resolver.txt(name)
    except DnsNotFound:
        sig.outcome = _describe(sig, "permerror", f"no key at {name}")
        return
    except DnsTempError as exc:
        sig.outcome = _describe(sig, "temperror", f"key lookup: {exc}")
        return
    usable = [r for r in records if "p=" in r]
    if not usable:
        sig.outcome = _describe(sig, "permerror", f"no key at {name}")
        return
    try:
        key_tags = parse_tag_value(usable[0].encode("utf-8"))
    except InvalidTagValueList as exc:
        sig.outcome = _describe(sig, "permerror", f"key record syntax: {exc}")
        return
    if not key_tags.get(b"p"):
        sig.outcome = _describe(sig, "permerror", "key revoked (empty p=, RFC 6376 §3.6.1)")
        return
    key_type = key_tags.get(b"k", b"rsa").lower()
    if not sig.tags[b"a"].lower().startswith(key_type + b"-"):
        # RFC 6376 §6.1.2 step 8: a key of another type than a= is a permanent failure.
        sig.outcome = _describe(sig, "permerror", f"key type {_text(key_type)} does not match a=")
        return
    try:
        dkimpy.evaluate_pk(name.encode("ascii", "replace"), usable[0])
    except (dkimpy.DKIMException, ValueError) as exc:
        sig.outcome = _describe(sig, "permerror", f"key record: {exc}")
        return
    sig.key_record = usable[0]


def _verify_with_keys(message: bytes, signatures: list[_Signature]) -> list[DkimResult]:
    """The crypto step for the signatures still undecided, with their prefetched key records."""
    checker = dkimpy.DKIM(message, minkey=MIN_RSA_BITS)
    results: list[DkimResult] = []
    for sig in signatures:
        if sig.outcome is not None:
            results.append(sig.outcome)
            continue
        record = sig.key_record
        try:
            good = checker.verify(idx=sig.index, dnsfunc=lambda _name, timeout=5, record=record: record)
        except dkimpy.KeyFormatError as exc:  # e.g. an RSA key below 1024 bits (RFC 8301)
            results.append(_describe(sig, "permerror", f"key: {exc}"))
        except dkimpy.ValidationError as exc:  # the body hash does not match
            results.append(_describe(sig, "fail", str(exc)))
        except dkimpy.DKIMException as exc:
            results.append(_describe(sig, "neutral", str(exc)))
        except ValueError as exc:  # e.g. PyNaCl refusing a b= of the wrong length
            results.append(_describe(sig, "fail", f"signature: {exc}"))
        except (IndexError, KeyError, TypeError) as exc:  # dkimpy on input it did not expect
            log.warning("dkim verification of d=%s crashed: %r", _text(sig.tags.get(b"d")), exc)
            results.append(_describe(sig, "neutral", f"signature: malformed ({type(exc).__name__})"))
        else:
            reason = "" if good else "signature did not verify"
            results.append(_describe(sig, "pass" if good else "fail", reason))
    return results


MAX_SIGNATURES = 5


async def verify(message: bytes, resolver: DnsResolver, *, accept_rsa_sha1: bool = False) -> list[DkimResult]:
    """One result per DKIM-Signature, top to bottom; a single result "none" when there is none.
    rsa-sha1 signatures are permerror unless `accept_rsa_sha1` (RFC 8301 §3.1 forbids them)."""
    try:
        signatures = await asyncio.to_thread(_read_signatures, message, accept_rsa_sha1)
    except dkimpy.DKIMException as exc:  # the header section itself cannot be parsed
        return [DkimResult(result="neutral", reason=f"message: {exc}")]
    if not signatures:
        return [DkimResult(result="none")]
    # Each signature costs a DNS query and a hash of the message: a sender could add hundreds.
    # RFC 6376 §6.1 lets a verifier limit the number it checks; the rest are not evaluated.
    signatures = signatures[:MAX_SIGNATURES]
    await asyncio.gather(*(_fetch_key(sig, resolver) for sig in signatures if sig.outcome is None))
    return await asyncio.to_thread(_verify_with_keys, message, signatures)
