"""One PKCS#11 token per process: the module initialised once, one login, a pool of sessions.

A PKCS#11 session is not thread-safe, so each is lent to one thread at a time. The module is
initialised once per process; a process that forked initialises it again (the parent's
state means nothing in the child), detected by the pid. A failure that means the token went
away raises `TokenUnavailable`, and the next call initialises the module again and logs in
anew, so serving resumes once the token is back.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import PyKCS11

from app.errors import ConfigurationError, ServiceUnavailable

MODULE_SETTING = "ROAMSIGN_PKCS11_MODULE"
LABEL_SETTING = "ROAMSIGN_PKCS11_TOKEN_LABEL"
PIN_SETTING = "ROAMSIGN_PKCS11_PIN_FILE"

# Return values meaning that the token, its slot or our sessions are gone, not that the
# operation was wrong: the next call initialises the module again.
_UNAVAILABLE = frozenset(
    {
        PyKCS11.CKR_GENERAL_ERROR,
        PyKCS11.CKR_DEVICE_ERROR,
        PyKCS11.CKR_DEVICE_MEMORY,
        PyKCS11.CKR_DEVICE_REMOVED,
        PyKCS11.CKR_TOKEN_NOT_PRESENT,
        PyKCS11.CKR_TOKEN_NOT_RECOGNIZED,
        PyKCS11.CKR_SLOT_ID_INVALID,
        PyKCS11.CKR_SESSION_HANDLE_INVALID,
        PyKCS11.CKR_SESSION_CLOSED,
        PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED,
        PyKCS11.CKR_USER_NOT_LOGGED_IN,
    }
)
_PIN_REFUSED = frozenset(
    {PyKCS11.CKR_PIN_INCORRECT, PyKCS11.CKR_PIN_INVALID, PyKCS11.CKR_PIN_LEN_RANGE}
)
_SESSION_FLAGS = PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION


class TokenUnavailable(ServiceUnavailable):
    """The token cannot be reached now (module error, token removed); a later call retries.

    A `ServiceUnavailable`: wherever it surfaces in a request, the unit of work rolls back and
    the caller gets 503 `service_unavailable` in its API's shape. `str()` is the reason, for
    logs and the CLI; callers see only `detail`, which names nothing about the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("the key store is unavailable; retry shortly")
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class Pkcs11Error(Exception):
    """The token refused an operation for a reason other than being unreachable."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Pkcs11ConfigurationError(ConfigurationError):
    """The pkcs11 key store cannot start as configured; the message names the setting."""


class ModuleNotLoadable(Pkcs11ConfigurationError):
    """ROAMSIGN_PKCS11_MODULE is missing or is not a PKCS#11 library."""


class TokenNotFound(Pkcs11ConfigurationError):
    """No token carries the label ROAMSIGN_PKCS11_TOKEN_LABEL."""


class TokenPinRejected(Pkcs11ConfigurationError):
    """The PIN in ROAMSIGN_PKCS11_PIN_FILE is unreadable or the token refused it."""


def error_name(code: int) -> str:
    return str(PyKCS11.CKR.get(code, f"CKR 0x{code:08x}"))


def read_pin_file(path: Path | None) -> str:
    """The user PIN: the first line of ROAMSIGN_PKCS11_PIN_FILE."""
    if path is None:
        raise TokenPinRejected(f"{PIN_SETTING} is not set: name the file holding the token PIN")
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise TokenPinRejected(f"{PIN_SETTING}: cannot read {path} ({error.strerror})") from None
    if not lines or not lines[0]:
        raise TokenPinRejected(f"{PIN_SETTING}: {path} is empty")
    return lines[0]


class _Module:
    """The process's one initialised copy of a PKCS#11 library (shared by its tokens)."""

    def __init__(self, path: str) -> None:
        self.lib: Any = PyKCS11.PyKCS11Lib()
        self.lib.load(path)
        self.pid = os.getpid()
        self.generation = 0
        self.lock = threading.Lock()

    def reinitialize(self, seen_generation: int) -> None:
        """C_Finalize then C_Initialize, unless another caller did so since `seen_generation`."""
        with self.lock:
            if self.pid == os.getpid() and self.generation != seen_generation:
                return
            # Fails when the library is already finalised or never was in this process: fine.
            self.lib.lib.C_Finalize()
            rv = self.lib.lib.C_Initialize()
            if rv not in (PyKCS11.CKR_OK, PyKCS11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
                raise TokenUnavailable(f"the PKCS#11 module failed to initialise: {error_name(rv)}")
            self.pid = os.getpid()
            self.generation += 1


_modules: dict[str, _Module] = {}
_modules_lock = threading.Lock()
_tokens: weakref.WeakSet[Token] = weakref.WeakSet()


def _module(path: str) -> tuple[_Module, bool]:
    """The loaded module for `path`, and whether this call loaded it."""
    with _modules_lock:
        if path in _modules:
            return _modules[path], False
        if not path:
            raise ModuleNotLoadable(f"{MODULE_SETTING} is not set: name the HSM's PKCS#11 library")
        if not Path(path).is_file():
            raise ModuleNotLoadable(f"{MODULE_SETTING}: {path} does not exist")
        try:
            module = _Module(path)
        except PyKCS11.PyKCS11Error as error:
            raise ModuleNotLoadable(
                f"{MODULE_SETTING}: {path} is not a loadable PKCS#11 library ({error})"
            ) from None
        _modules[path] = module
        return module, True


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time stays held in the child forever.
    global _modules_lock  # noqa: PLW0603
    _modules_lock = threading.Lock()
    for module in _modules.values():
        module.lock = threading.Lock()
    for token in list(_tokens):
        token._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Token:
    """A logged-in token and its session pool; `session()` lends one session to one thread.

    `on_reset` callbacks run whenever the sessions were lost (module initialised again, fork),
    so that holders of object handles drop them.
    """

    def __init__(self, module_path: str, label: str, pin: str, *, pool_size: int = 8) -> None:
        self.module_path = module_path
        self.label = label
        self._pin = pin
        self._pool_size = pool_size
        self._module: _Module | None = None
        self._generation = -1
        self._slot: int | None = None
        self._stale = False
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._free = threading.BoundedSemaphore(pool_size)
        self.on_reset: list[Callable[[], None]] = []
        _tokens.add(self)

    def __repr__(self) -> str:
        return f"Token(module={self.module_path!r}, label={self.label!r})"

    def open(self) -> None:
        """Load the module, find the token, log in: configuration errors name the setting."""
        module, loaded_now = _module(self.module_path)
        with self._lock:
            try:
                try:
                    self._connect(module)
                except TokenNotFound:
                    if loaded_now:
                        raise
                    # SoftHSM2 reads its token directory only in C_Initialize: a token made
                    # after another part of this process initialised the module needs a new one.
                    module.reinitialize(module.generation)
                    self._connect(module)
            except PyKCS11.PyKCS11Error as error:
                raise Pkcs11ConfigurationError(
                    f"{LABEL_SETTING}: the token {self.label!r} in {self.module_path} cannot be "
                    f"used: {error_name(error.value)}"
                ) from None

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A PyKCS11 session for this thread alone; PKCS#11 errors come out translated."""
        if not self._free.acquire(timeout=60):
            raise TokenUnavailable("no PKCS#11 session became free within 60 seconds")
        try:
            try:
                session, generation = self._take()
            except PyKCS11.PyKCS11Error as error:
                raise self._translate(error) from None
            try:
                yield session
            except PyKCS11.PyKCS11Error as error:
                if error.value not in _UNAVAILABLE:
                    self._give_back(session, generation)
                raise self._translate(error) from None
            except BaseException:
                self._give_back(session, generation)
                raise
            self._give_back(session, generation)
        finally:
            self._free.release()

    def _translate(self, error: PyKCS11.PyKCS11Error) -> Exception:
        if error.value in _UNAVAILABLE:
            self._stale = True
            return TokenUnavailable(
                f"the token {self.label!r} is unavailable: {error_name(error.value)}"
            )
        return Pkcs11Error(error.value, error_name(error.value))

    def token_info_label(self) -> str:
        """The token's label as it reports it now (a cheap probe that it is still there)."""
        module = self._module
        if module is None or self._slot is None:
            raise TokenUnavailable(f"the token {self.label!r} is not open")
        return str(module.lib.getTokenInfo(self._slot).label).strip()

    def close(self) -> None:
        with self._lock:
            sessions, self._idle = self._idle, []
        for session in sessions:
            with suppress(PyKCS11.PyKCS11Error):
                session.closeSession()

    def _take(self) -> tuple[Any, int]:
        with self._lock:
            module = self._module
            if module is None:
                raise TokenUnavailable(f"the token {self.label!r} is not open")
            if self._stale or module.pid != os.getpid() or module.generation != self._generation:
                self._reconnect(module)
            if self._idle:
                return self._idle.pop(), self._generation
            return self._open_session(module), self._generation

    def _give_back(self, session: Any, generation: int) -> None:
        with self._lock:
            if generation == self._generation and not self._stale:
                self._idle.append(session)

    def _reconnect(self, module: _Module) -> None:
        # The old sessions died with the old initialisation (or belong to the parent process).
        self._idle = []
        for callback in self.on_reset:
            callback()
        module.reinitialize(self._generation)
        try:
            self._connect(module)
        except Pkcs11ConfigurationError as error:
            self._stale = True
            raise TokenUnavailable(str(error)) from None
        except PyKCS11.PyKCS11Error as error:
            self._stale = True
            raise TokenUnavailable(
                f"the token {self.label!r} is unavailable: {error_name(error.value)}"
            ) from None

    def _connect(self, module: _Module) -> None:
        self._module = module
        self._generation = module.generation
        self._slot = self._find_slot(module)
        self._idle = [self._open_session(module, login=True)]
        self._stale = False

    def _find_slot(self, module: _Module) -> int:
        for slot in module.lib.getSlotList(tokenPresent=True):
            try:
                label = str(module.lib.getTokenInfo(slot).label).strip()
            except PyKCS11.PyKCS11Error:
                continue
            if label == self.label:
                return int(slot)
        raise TokenNotFound(
            f"{LABEL_SETTING}: no token labelled {self.label!r} in {self.module_path}"
        )

    def _open_session(self, module: _Module, *, login: bool = False) -> Any:
        session = module.lib.openSession(self._slot, _SESSION_FLAGS)
        if login:
            try:
                session.login(self._pin)
            except PyKCS11.PyKCS11Error as error:
                if error.value == PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
                    return session
                session.closeSession()
                if error.value in _PIN_REFUSED:
                    raise TokenPinRejected(
                        f"{PIN_SETTING}: the token {self.label!r} refused the PIN in that file"
                    ) from None
                if error.value == PyKCS11.CKR_PIN_LOCKED:
                    raise TokenPinRejected(
                        f"{PIN_SETTING}: the token {self.label!r} has locked its user PIN"
                    ) from None
                raise
        return session

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._free = threading.BoundedSemaphore(self._pool_size)
        self._idle = []
