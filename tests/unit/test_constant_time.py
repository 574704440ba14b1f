"""Every secret comparison is constant-time: `==`, `!=`, `in` and `not in` never touch an
operand named like a secret (a MAC, OTP, PIN, token, SAD, key hash, digest, password...) in
app/, except in the comparisons listed below with the reason each is safe; and the checks
of OTPs, PINs, SADs, codes and API keys go through `hmac.compare_digest`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.crypto.secrets import macs_equal

APP = Path(__file__).resolve().parents[2] / "app"

SECRET_WORDS = frozenset(
    {
        "mac",
        "macs",
        "hmac",
        "otp",
        "otps",
        "pin",
        "pins",
        "token",
        "tokens",
        "sad",
        "secret",
        "secrets",
        "digest",
        "password",
        "passphrase",
        "code",
        "nonce",
    }
)
SECRET_PARTS = ("key_hash", "api_key", "apikey", "private_key", "master_key", "seal_key")
# Words that make a name about a secret rather than the secret: its size, count, status...
ABOUT_WORDS = frozenset(
    {
        "size",
        "len",
        "length",
        "algorithm",
        "algorithms",
        "algo",
        "count",
        "failures",
        "attempts",
        "at",
        "status",
        "ttl",
        "seconds",
        "format",
        "purpose",
        "purposes",
        "id",
        "ids",
        "max",
        "per",
        "day",
        "words",
    }
)

# (module, function, comparison as `ast.unparse` writes it): why it is safe.
ALLOWED = {
    (
        "app/crypto/cms.py",
        "_attributes_problem",
        "_single(attributes, 'message_digest') != digest",
    ): "checks a CMS structure against a document's digest: both public",
    (
        "app/crypto/cms.py",
        "_signing_certificate_problem",
        "cert_id['cert_hash'] != _digest(_hash(hash_name), der)",
    ): "checks a certificate's hash in a CMS structure: both public",
    (
        "app/services/audit/log.py",
        "",  # the module's prebuilt head move, _MOVE_HEAD
        "_HEADS.c.mac == bindparam('head_previous_mac')",
    ): "compare-and-set (SQL) of the audit chain's head against the head this process last "
    "wrote or read: stored in the clear beside the events, never caller input",
    (
        "app/services/clients.py",
        "",  # the module's prebuilt lookup statement, _CLIENT_BY_KEY
        "ApiClient.key_hash == bindparam('digest')",
    ): "an index lookup (SQL) by the SHA-256 of a 256-bit random key; compare_digest follows",
    (
        "app/services/lifecycle/tokens.py",
        "TokenService.consume",
        "OneTimeToken.token_mac == token_mac(self._mac_key, candidate, subject_id, token)",
    ): "an index lookup (SQL) by an HMAC under a server key: the caller cannot steer its bytes",
    (
        "app/services/lifecycle/pins.py",
        "PinService._store_pin",
        "Credential.pin_mac == replacing",
    ): "compare-and-set (SQL) against the MAC this request read from the same row: no input",
    (
        "app/services/web/sessions.py",
        "WebSessionService.resolve",
        "WebSession.token_hash == token_hash(token)",
    ): "an index lookup (SQL) by the SHA-256 of a 256-bit random cookie token",
    (
        "app/services/web/sessions.py",
        "WebSessionService.end",
        "WebSession.token_hash == token_hash(token)",
    ): "an index lookup (SQL) by the SHA-256 of a 256-bit random cookie token",
    (
        "app/validation.py",
        "check_pin",
        "pin in COMMON_PINS",
    ): "refuses a new PIN found in a public list of common PINs; no stored secret involved",
}

# The checks themselves: each must call `macs_equal` or `hmac.compare_digest`.
CONSTANT_TIME_CHECKS = {
    ("app/crypto/secrets.py", "macs_equal"),
    ("app/services/signing/check.py", "OtpPinCheck.check_otp_and_pin"),
    ("app/services/lifecycle/pins.py", "PinService.change"),
    ("app/services/lifecycle/pins.py", "PinService._refuse_same_pin"),
    ("app/services/signing/csc.py", "CscService._request_of_sad"),
    ("app/services/devices/activation.py", "DeviceActivator.activate"),
    ("app/services/devices/registration.py", "DeviceRegistrar.register"),
    ("app/services/clients.py", "ClientService.authenticate"),
    ("app/services/audit/verification.py", "verify_audit_trail"),
}
CONSTANT_TIME_CALLS = frozenset({"compare_digest", "macs_equal"})


@dataclass(frozen=True)
class Comparison:
    module: str
    function: str
    text: str
    line: int


def looks_secret(node: ast.expr) -> bool:
    """Named like a secret: `otp_mac`, `token`, `row.key_hash`, `api_key_hash(...)`."""
    while isinstance(node, ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    else:
        return False
    if name.isupper():  # a constant of the code: PENDING_PIN, COMMON_PINS
        return False
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    words = {word for word in snake.split("_") if word}
    if words & ABOUT_WORDS:
        return False
    return bool(words & SECRET_WORDS) or any(part in snake for part in SECRET_PARTS)


def literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return all(literal(element) for element in node.elts)
    return False


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []
        self.comparisons: list[Comparison] = []
        self.constant_time: set[str] = set()

    def _enter(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _enter

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in CONSTANT_TIME_CALLS:
            self.constant_time.add(".".join(self.scope))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                continue
            if literal(left) or literal(right):
                continue  # a secret against a constant of the code says nothing
            if looks_secret(left) or looks_secret(right):
                self.comparisons.append(
                    Comparison(self.module, ".".join(self.scope), ast.unparse(node), node.lineno)
                )
        self.generic_visit(node)


def scan() -> tuple[list[Comparison], set[tuple[str, str]]]:
    comparisons: list[Comparison] = []
    constant_time: set[tuple[str, str]] = set()
    for path in sorted(APP.rglob("*.py")):
        module = path.relative_to(APP.parent).as_posix()
        scanner = _Scanner(module)
        scanner.visit(ast.parse(path.read_text(), filename=str(path)))
        comparisons += scanner.comparisons
        constant_time |= {(module, function) for function in scanner.constant_time}
    return comparisons, constant_time


@pytest.fixture(scope="module")
def scanned() -> tuple[list[Comparison], set[tuple[str, str]]]:
    return scan()


def test_no_secret_is_compared_with_equality(
    scanned: tuple[list[Comparison], set[tuple[str, str]]],
) -> None:
    comparisons, _ = scanned
    found = [c for c in comparisons if (c.module, c.function, c.text) not in ALLOWED]
    assert not found, (
        "compare secrets with hmac.compare_digest (app.crypto.secrets.macs_equal):\n"
        + ("\n".join(f"{c.module}:{c.line} in {c.function}: {c.text}" for c in found))
    )


def test_every_allowed_comparison_still_exists(
    scanned: tuple[list[Comparison], set[tuple[str, str]]],
) -> None:
    comparisons, _ = scanned
    present = {(c.module, c.function, c.text) for c in comparisons}
    assert set(ALLOWED) <= present, set(ALLOWED) - present


def test_the_secret_checks_are_constant_time(
    scanned: tuple[list[Comparison], set[tuple[str, str]]],
) -> None:
    _, constant_time = scanned
    assert constant_time >= CONSTANT_TIME_CHECKS, CONSTANT_TIME_CHECKS - constant_time


def test_the_scanner_finds_what_it_must() -> None:
    source = """
def check(request, given, otp, token, row):
    if request.otp_mac == given: ...
    if otp != "000000": ...
    if token in row.tokens: ...
    if row.pin_failures == 0: ...
    if len(otp) == 6: ...
    if hash_algorithm in HASHES: ...
    if api_key_hash(token) != row.key_hash: ...
"""
    scanner = _Scanner("example.py")
    scanner.visit(ast.parse(source))
    assert [c.text for c in scanner.comparisons] == [
        "request.otp_mac == given",
        "token in row.tokens",
        "api_key_hash(token) != row.key_hash",
    ]


def test_macs_equal() -> None:
    assert macs_equal(b"a" * 32, b"a" * 32)
    assert not macs_equal(b"a" * 32, b"b" * 32)
    assert not macs_equal(None, b"a" * 32)
