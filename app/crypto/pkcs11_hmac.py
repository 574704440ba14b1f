"""HMAC-SHA256 under a token key in one C_SignInit and one C_Sign, called through ctypes.

PyKCS11's `Session.sign` first asks for the signature's size (a second C_Sign) and passes
every byte in and out through a SWIG list, about 1 us a byte out: for a 32-byte MAC its
wrapper costs more than the token's own work (bench/hsm.py). This calls the same module's
functions, reached through C_GetFunctionList of the library PyKCS11 loaded (dlopen hands back
the process's one copy), on PyKCS11's own session and object handles: sessions, logins and the
translation of errors stay where they are. ctypes also lets go of the GIL during the call,
which PyKCS11 does not.
"""

from __future__ import annotations

import ctypes
from typing import Any

import PyKCS11

_ULONG = ctypes.c_ulong  # CK_ULONG, and every CK_*_HANDLE
_HMAC_BYTES = 32
# struct ck_function_list (PKCS#11 2.40, unchanged in 3.0): CK_VERSION, then the function
# pointers in this order; C_SignInit and C_Sign are the 43rd and 44th.
_FUNCTIONS_BEFORE_SIGN_INIT = 42
_SIGN_INIT = ctypes.CFUNCTYPE(_ULONG, _ULONG, ctypes.c_void_p, _ULONG)
_SIGN = ctypes.CFUNCTYPE(
    _ULONG, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_char_p, ctypes.POINTER(_ULONG)
)


class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", _ULONG), ("parameter", ctypes.c_void_p), ("length", _ULONG)]


class _FunctionList(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_ubyte * 2),
        ("before", ctypes.c_void_p * _FUNCTIONS_BEFORE_SIGN_INIT),
        ("sign_init", ctypes.c_void_p),
        ("sign", ctypes.c_void_p),
    ]


_SHA256_HMAC = _Mechanism(PyKCS11.CKM_SHA256_HMAC, None, 0)


class HmacCall:
    """CKM_SHA256_HMAC through the module at `module_path` (already loaded by PyKCS11)."""

    def __init__(self, module_path: str) -> None:
        library = ctypes.CDLL(module_path)
        functions = ctypes.POINTER(_FunctionList)()
        rv = library.C_GetFunctionList(ctypes.byref(functions))
        if rv != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(rv)
        self._sign_init = _SIGN_INIT(functions.contents.sign_init)
        self._sign = _SIGN(functions.contents.sign)

    def __call__(self, session: Any, key: Any, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` on the PyKCS11 session `session` with the key handle `key`;
        a refusal raises `PyKCS11.PyKCS11Error`, as PyKCS11 would."""
        session_handle = session.session.value()
        rv = self._sign_init(session_handle, ctypes.byref(_SHA256_HMAC), key.value())
        if rv != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(rv)
        mac = ctypes.create_string_buffer(_HMAC_BYTES)
        length = _ULONG(_HMAC_BYTES)
        rv = self._sign(session_handle, data, len(data), mac, ctypes.byref(length))
        if rv != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(rv)
        return mac.raw[: length.value]
