"""Signing: an OTP bound to one document hash, the OTP + PIN check, the signature
(native and CSC)."""
