"""Authentication: password hashing and policy (tokens and SASL live beside it later)."""

from whymail.auth.passwords import check_password_policy, hash_password, verify_password

__all__ = ["check_password_policy", "hash_password", "verify_password"]
