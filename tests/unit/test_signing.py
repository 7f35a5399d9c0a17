"""Both signature formats match an independent HMAC, and `verify` accepts only genuine requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.cli import main
from service.errors import SignatureError
from service.signing import (
    ALL_SCHEMES,
    KeyPair,
    Scheme,
    ed25519_signature,
    legacy_signature,
    parse_schemes,
    public_key_text,
    quantum_signature,
    secret_from_standard,
    signature_headers,
    standard_secret,
    standard_signature,
    verify_signature,
    verify_standard,
)

SECRET = "qe_whsec_a8f3c92e5b1d4e7f9a0b2c4d6e8f0a1b"
OLD_SECRET = "qe_whsec_0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0l"
BODY = (
    b'{"id":"evt_01HXY","event":"verification.created","occurredAt":"2026-05-24T08:15:12.481Z",'
    b'"orgId":"org_01HXY","data":{"verificationId":"ver_1","customerId":"cus_1",'
    b'"method":"ktp_capture","status":"verified","score":87}}'
)
NOW = 1_779_610_512


def hmac_by_hand(key: str, message: bytes) -> str:
    """HMAC-SHA256 from RFC 2104 on top of hashlib alone, so the test does not trust `hmac`."""
    block = key.encode()
    if len(block) > 64:
        block = hashlib.sha256(block).digest()
    block = block.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).hexdigest()


def test_rfc_4231_vector() -> None:
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hmac_by_hand("Jefe", b"what do ya want for nothing?") == expected
    assert legacy_signature("Jefe", b"what do ya want for nothing?") == f"sha256={expected}"


def test_legacy_signature_is_hmac_of_the_body() -> None:
    assert legacy_signature(SECRET, BODY) == "sha256=" + hmac_by_hand(SECRET, BODY)
    long_secret = "qe_whsec_" + "x" * 100  # longer than a SHA-256 block: hashed first
    assert legacy_signature(long_secret, BODY) == "sha256=" + hmac_by_hand(long_secret, BODY)


def test_quantum_signature_is_hmac_of_timestamp_dot_body() -> None:
    expected = hmac_by_hand(SECRET, f"{NOW}.".encode() + BODY)
    assert quantum_signature([SECRET], BODY, NOW) == f"t={NOW},v1={expected}"


def test_rotation_gives_one_v1_per_secret_in_order() -> None:
    header = quantum_signature([SECRET, OLD_SECRET], BODY, NOW)
    message = f"{NOW}.".encode() + BODY
    assert header == (
        f"t={NOW},v1={hmac_by_hand(SECRET, message)},v1={hmac_by_hand(OLD_SECRET, message)}"
    )


def test_non_ascii_secret_is_its_utf8_bytes() -> None:
    secret = "qe_whsec_ñandú"
    assert legacy_signature(secret, BODY) == "sha256=" + hmac_by_hand(secret, BODY)


HMAC_NAMES = {"X-Identity-Signature", "X-Quantum-Signature"}
STANDARD_NAMES = {"webhook-id", "webhook-timestamp", "webhook-signature"}
DELIVERY = "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK"


@pytest.mark.parametrize(
    ("schemes", "names"),
    [
        ([Scheme.LEGACY], {"X-Identity-Signature"}),
        ([Scheme.LEGACY, Scheme.QUANTUM], HMAC_NAMES),
        ([Scheme.QUANTUM], {"X-Quantum-Signature"}),
        ([Scheme.STANDARD], STANDARD_NAMES),
        (ALL_SCHEMES, HMAC_NAMES | STANDARD_NAMES),
    ],
)
def test_each_scheme_gives_its_headers(schemes: list[Scheme], names: set[str]) -> None:
    headers = signature_headers(schemes, [SECRET, OLD_SECRET], BODY, NOW, DELIVERY)
    assert set(headers) == names
    if "X-Identity-Signature" in headers:  # the primary secret alone
        assert headers["X-Identity-Signature"] == legacy_signature(SECRET, BODY)
    if "X-Quantum-Signature" in headers:
        assert headers["X-Quantum-Signature"] == quantum_signature([SECRET, OLD_SECRET], BODY, NOW)
    if "webhook-id" in headers:
        assert headers["webhook-id"] == DELIVERY
        assert headers["webhook-timestamp"] == str(NOW)
        expected = standard_signature([SECRET, OLD_SECRET], DELIVERY, NOW, BODY)
        assert headers["webhook-signature"] == expected


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        signature_headers(ALL_SCHEMES, [], BODY, NOW, DELIVERY)
    with pytest.raises(ValueError, match="secret"):
        quantum_signature([], BODY, NOW)
    with pytest.raises(ValueError, match="secret"):
        standard_signature([], DELIVERY, NOW, BODY)


def b64_hmac_by_hand(key: str, message: bytes) -> str:
    return base64.b64encode(bytes.fromhex(hmac_by_hand(key, message))).decode()


def test_standard_signature_is_base64_hmac_of_id_timestamp_body_per_secret() -> None:
    message = f"{DELIVERY}.{NOW}.".encode() + BODY
    assert standard_signature([SECRET], DELIVERY, NOW, BODY) == (
        "v1," + b64_hmac_by_hand(SECRET, message)
    )
    assert standard_signature([SECRET, OLD_SECRET], DELIVERY, NOW, BODY) == (
        f"v1,{b64_hmac_by_hand(SECRET, message)} v1,{b64_hmac_by_hand(OLD_SECRET, message)}"
    )


def test_the_standard_secret_is_whsec_and_base64_of_the_secrets_bytes() -> None:
    form = standard_secret(SECRET)
    assert form.startswith("whsec_")
    assert base64.b64decode(form.removeprefix("whsec_")) == SECRET.encode()
    assert secret_from_standard(form) == SECRET
    assert secret_from_standard(SECRET) == SECRET  # the secret itself passes through
    with pytest.raises(ValueError, match="base64"):
        secret_from_standard("whsec_***")


def test_the_standard_secrets_key_signs_as_the_secret_does() -> None:
    """What Standard Webhooks' libraries do with a whsec_ secret: its base64 decoded is the
    HMAC key; that key signs exactly what the secret signs."""
    key = base64.b64decode(standard_secret(SECRET).removeprefix("whsec_"))
    message = f"{DELIVERY}.{NOW}.".encode() + BODY
    theirs = "v1," + base64.b64encode(hmac.digest(key, message, "sha256")).decode()
    assert theirs == standard_signature([SECRET], DELIVERY, NOW, BODY)


def test_ed25519_signatures_verify_with_the_public_keys_in_order() -> None:
    new, old = KeyPair.generate(), KeyPair.generate()
    header = ed25519_signature([new.private, old.private], DELIVERY, NOW, BODY)
    items = header.split(" ")
    assert [item.split(",")[0] for item in items] == ["v1a", "v1a"]
    message = f"{DELIVERY}.{NOW}.".encode() + BODY
    for pair, item in zip((new, old), items, strict=True):
        public = Ed25519PublicKey.from_public_bytes(pair.public)
        public.verify(base64.b64decode(item.split(",")[1]), message)  # raises if it fails
        with pytest.raises(InvalidSignature):
            public.verify(base64.b64decode(item.split(",")[1]), message + b" ")
    assert public_key_text(new.public) == "whpk_" + base64.b64encode(new.public).decode()
    assert len(new.public) == 32


def test_an_ed25519_subscription_signs_the_standard_header_with_its_keys_alone() -> None:
    pair = KeyPair.generate()
    for schemes in (ALL_SCHEMES, [Scheme.LEGACY, Scheme.QUANTUM]):
        headers = signature_headers(
            schemes, [SECRET], BODY, NOW, DELIVERY, private_keys=[pair.private]
        )
        # The HMAC headers as for any subscription; webhook-signature v1a only, even when the
        # operator left the standard scheme out (it is the asymmetric signature asked for).
        assert set(headers) == HMAC_NAMES | STANDARD_NAMES
        assert headers["webhook-signature"].startswith("v1a,")
        assert " " not in headers["webhook-signature"]
    public = public_key_text(pair.public)
    verify_standard(public, headers, BODY, now=NOW)
    with pytest.raises(SignatureError) as caught:
        verify_standard(standard_secret(SECRET), headers, BODY, now=NOW)
    assert caught.value.reason == "no_matching_signature"


def test_without_the_hmac_headers_the_standard_ones_are_the_signature() -> None:
    for schemes in (ALL_SCHEMES, [Scheme.LEGACY]):
        headers = signature_headers(schemes, [SECRET], BODY, NOW, DELIVERY, hmac_headers=False)
        assert set(headers) == STANDARD_NAMES
        verify_standard(standard_secret(SECRET), headers, BODY, now=NOW)


def standard_reason(key: str, headers: dict[str, str], body: bytes = BODY, now: int = NOW) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_standard(key, headers, body, now=now)
    return caught.value.reason


def test_verify_standard_accepts_either_form_of_the_secret_and_any_live_one() -> None:
    headers = signature_headers([Scheme.STANDARD], [SECRET, OLD_SECRET], BODY, NOW, DELIVERY)
    for key in (SECRET, standard_secret(SECRET), OLD_SECRET, standard_secret(OLD_SECRET)):
        verify_standard(key, headers, BODY, now=NOW)
        verify_standard(key, {k.upper(): v for k, v in headers.items()}, BODY, now=NOW + 300)
    assert standard_reason("qe_whsec_third", headers) == "no_matching_signature"


def test_verify_standard_refuses_what_was_changed_or_is_stale() -> None:
    pair, other = KeyPair.generate(), KeyPair.generate()
    hmac_signed = signature_headers([Scheme.STANDARD], [SECRET], BODY, NOW, DELIVERY)
    ed_signed = signature_headers(
        [Scheme.STANDARD], [SECRET], BODY, NOW, DELIVERY, private_keys=[pair.private]
    )
    for key, headers in (
        (SECRET, hmac_signed),
        (public_key_text(pair.public), ed_signed),
    ):
        assert standard_reason(key, headers, BODY + b" ") == "no_matching_signature"
        changed_id = {**headers, "webhook-id": DELIVERY[:-1] + "0"}
        assert standard_reason(key, changed_id) == "no_matching_signature"
        later = {**headers, "webhook-timestamp": str(NOW + 1)}
        assert standard_reason(key, later) == "no_matching_signature"
        for skew in (301, -301):
            assert standard_reason(key, headers, now=NOW + skew) == "timestamp_outside_tolerance"
        assert standard_reason(key, {**headers, "webhook-timestamp": "soon"}) == (
            "malformed_header"
        )
        assert standard_reason(key, {"webhook-id": DELIVERY}) == "malformed_header"
    assert standard_reason(public_key_text(other.public), ed_signed) == "no_matching_signature"
    assert standard_reason("whpk_short", ed_signed) == "malformed_key"
    # A v1a where the key expects v1, and the other way round: neither is taken for the other.
    assert standard_reason(public_key_text(pair.public), hmac_signed) == "no_matching_signature"
    assert standard_reason(SECRET, ed_signed) == "no_matching_signature"


@pytest.mark.parametrize(
    ("value", "schemes"),
    [
        ("legacy,quantum,standard", ALL_SCHEMES),
        (" standard , legacy ", (Scheme.LEGACY, Scheme.STANDARD)),
        ("both", (Scheme.LEGACY, Scheme.QUANTUM)),
        ("legacy", (Scheme.LEGACY,)),
        ("quantum", (Scheme.QUANTUM,)),
        ("STANDARD,standard", (Scheme.STANDARD,)),
        (["quantum", "both"], (Scheme.LEGACY, Scheme.QUANTUM)),
    ],
)
def test_schemes_are_parsed_in_their_order_with_the_old_single_values(
    value: object, schemes: tuple[Scheme, ...]
) -> None:
    assert parse_schemes(value) == schemes


@pytest.mark.parametrize("value", ["", " , ", "sometimes", "legacy,v2", 3])
def test_unknown_or_no_schemes_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="legacy, quantum, standard"):
        parse_schemes(value)


def reason(secret: str, header: str, body: bytes = BODY, now: float = NOW) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_signature(secret, header, body, now=now)
    return caught.value.reason


def test_verify_accepts_good_signatures() -> None:
    verify_signature(SECRET, legacy_signature(SECRET, BODY), BODY)
    verify_signature(SECRET, quantum_signature([SECRET], BODY, NOW), BODY, now=NOW)
    upper = legacy_signature(SECRET, BODY).upper().replace("SHA256=", "sha256=")
    verify_signature(SECRET, f"  {upper} ", BODY)


def test_verify_accepts_any_one_v1_during_rotation() -> None:
    header = quantum_signature([SECRET, OLD_SECRET], BODY, NOW)
    verify_signature(SECRET, header, BODY, now=NOW)
    verify_signature(OLD_SECRET, header, BODY, now=NOW)
    assert reason("qe_whsec_third", header) == "no_matching_signature"


def test_verify_reads_the_fields_in_any_order_and_ignores_unknown_schemes() -> None:
    v1 = quantum_signature([SECRET], BODY, NOW).split(",")[1]
    verify_signature(SECRET, f"v0=abc, {v1} ,t={NOW},v2=zzz", BODY, now=NOW)


def test_verify_rejects_a_tampered_body() -> None:
    tampered = BODY.replace(b'"score":87', b'"score":99')
    assert reason(SECRET, legacy_signature(SECRET, BODY), tampered) == "no_matching_signature"
    header = quantum_signature([SECRET], BODY, NOW)
    assert reason(SECRET, header, tampered) == "no_matching_signature"
    assert reason(SECRET, header, BODY + b"\n") == "no_matching_signature"


def test_verify_rejects_a_wrong_secret() -> None:
    assert reason("qe_whsec_wrong", legacy_signature(SECRET, BODY)) == "no_matching_signature"
    header = quantum_signature([SECRET], BODY, NOW)
    assert reason("qe_whsec_wrong", header) == "no_matching_signature"


def test_verify_rejects_a_changed_timestamp() -> None:
    signature = quantum_signature([SECRET], BODY, NOW).split(",")[1]
    assert reason(SECRET, f"t={NOW + 1},{signature}") == "no_matching_signature"


@pytest.mark.parametrize("skew", [301, -301, 86400, -86400])
def test_verify_rejects_stale_and_future_timestamps(skew: int) -> None:
    header = quantum_signature([SECRET], BODY, NOW)
    assert reason(SECRET, header, now=NOW + skew) == "timestamp_outside_tolerance"


@pytest.mark.parametrize("skew", [0, 300, -300])
def test_verify_accepts_timestamps_within_tolerance(skew: int) -> None:
    verify_signature(SECRET, quantum_signature([SECRET], BODY, NOW), BODY, now=NOW + skew)


def test_tolerance_is_configurable() -> None:
    header = quantum_signature([SECRET], BODY, NOW)
    verify_signature(SECRET, header, BODY, now=NOW + 3000, tolerance=3600)
    with pytest.raises(SignatureError):
        verify_signature(SECRET, header, BODY, now=NOW + 2, tolerance=1)
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(SECRET, header, BODY, now=NOW, tolerance=float("nan"))


GOOD_V1 = "v1=" + "a" * 64


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "sha256=",
        "sha256=abc",
        "sha256=" + "g" * 64,
        "sha256=" + "a" * 65,
        "sha1=" + "a" * 40,
        "garbage",
        f"t={NOW}",
        GOOD_V1,
        f"t=,{GOOD_V1}",
        f"t=-{NOW},{GOOD_V1}",
        f"t={NOW}.5,{GOOD_V1}",
        f"t=1{'0' * 5000},{GOOD_V1}",
        f"t={NOW},t={NOW},{GOOD_V1}",
        f"t=١٢٣,{GOOD_V1}",
        f"t={NOW},v1=",
        f"t={NOW},v1=xyz",
        f"t={NOW},v1=é{'a' * 63}",
        f"t={NOW},,{GOOD_V1}",
    ],
)
def test_verify_rejects_malformed_headers(header: str) -> None:
    assert reason(SECRET, header) == "malformed_header"


def test_signature_error_carries_reason_and_detail() -> None:
    error = SignatureError("malformed_header", "no t= timestamp")
    assert (error.reason, error.detail) == ("malformed_header", "no t= timestamp")
    assert str(error) == "malformed_header: no t= timestamp"
    assert str(SignatureError("no_matching_signature")) == "no_matching_signature"


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "body.json"
    path.write_bytes(BODY)
    return path


@pytest.fixture
def broken_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment in which the service itself could not start."""
    monkeypatch.setenv("WEBHOOKS_HTTP_PORT", "not-a-port")
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("broken_settings")
def test_cli_verify_ok(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for header in (
        quantum_signature([SECRET, OLD_SECRET], BODY, int(time.time())),
        legacy_signature(SECRET, BODY),
    ):
        args = ["verify", "--secret", SECRET, "--header", header, "--body-file", str(body_file)]
        assert main(args) == 0
        assert capsys.readouterr() == ("ok\n", "")


@pytest.mark.usefixtures("broken_settings")
def test_cli_verify_checks_the_standard_webhooks_header_with_a_secret_or_a_public_key(
    body_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time())
    pair = KeyPair.generate()
    hmac_signed = standard_signature([SECRET, OLD_SECRET], DELIVERY, now, BODY)
    ed_signed = ed25519_signature([pair.private], DELIVERY, now, BODY)
    body = ["--body-file", str(body_file), "--id", DELIVERY, "--timestamp", str(now)]
    for key, header in (
        (["--secret", SECRET], hmac_signed),
        (["--secret", standard_secret(OLD_SECRET)], hmac_signed),
        (["--public-key", public_key_text(pair.public)], ed_signed),
    ):
        assert main(["verify", *key, "--header", header, *body]) == 0
        assert capsys.readouterr() == ("ok\n", "")
    # The standard secret's form works for the quantum header too.
    quantum = quantum_signature([SECRET], BODY, now)
    secret = ["--secret", standard_secret(SECRET), "--body-file", str(body_file)]
    assert main(["verify", *secret, "--header", quantum]) == 0
    capsys.readouterr()
    other = public_key_text(KeyPair.generate().public)
    assert main(["verify", "--public-key", other, "--header", ed_signed, *body]) == 1
    assert capsys.readouterr().err.startswith("no_matching_signature")
    changed = ["--id", DELIVERY + "X", "--timestamp", str(now), "--body-file", str(body_file)]
    assert main(["verify", "--secret", SECRET, "--header", hmac_signed, *changed]) == 1
    capsys.readouterr()
    # Without the id and timestamp a webhook-signature cannot be checked: a usage error.
    args = ["verify", "--secret", SECRET, "--header", hmac_signed, "--body-file", str(body_file)]
    assert main(args) == 2
    assert "--id and --timestamp" in capsys.readouterr().err


@pytest.mark.usefixtures("broken_settings")
@pytest.mark.parametrize(
    ("secret", "header", "expected"),
    [
        ("qe_whsec_wrong", legacy_signature(SECRET, BODY), "no_matching_signature"),
        (SECRET, quantum_signature([SECRET], BODY, 1_000_000_000), "timestamp_outside_tolerance"),
        (SECRET, "nonsense", "malformed_header"),
    ],
)
def test_cli_verify_fails_with_the_reason(
    body_file: Path, capsys: pytest.CaptureFixture[str], secret: str, header: str, expected: str
) -> None:
    code = main(["verify", "--secret", secret, "--header", header, "--body-file", str(body_file)])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(expected)


@pytest.mark.usefixtures("broken_settings")
def test_cli_verify_honours_tolerance(body_file: Path) -> None:
    header = quantum_signature([SECRET], BODY, 1_000_000_000)
    args = ["verify", "--secret", SECRET, "--header", header, "--body-file", str(body_file)]
    assert main([*args, "--tolerance", "1e12"]) == 0
    with pytest.raises(SystemExit) as exited:
        main([*args, "--tolerance", "-1"])
    assert exited.value.code == 2


@pytest.mark.usefixtures("broken_settings")
def test_cli_verify_unreadable_body_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    header = legacy_signature(SECRET, BODY)
    assert (
        main(["verify", "--secret", SECRET, "--header", header, "--body-file", str(missing)]) == 2
    )
    assert "cannot read the body" in capsys.readouterr().err


@pytest.mark.usefixtures("broken_settings")
def test_serve_still_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 2
    assert "WEBHOOKS_HTTP_PORT" in capsys.readouterr().err


def test_python_m_service_verify_needs_no_settings(body_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WEBHOOKS_HTTP_PORT": "not-a-port", "WEBHOOKS_LOG_FORMAT": "xml"}
    command = [sys.executable, "-m", "service", "verify", "--secret", SECRET]
    good = legacy_signature(SECRET, BODY)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            input=BODY.decode(),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = verify("--header", good, "--body-file", str(body_file))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "ok\n", "")
    bad = verify("--header", legacy_signature("qe_whsec_wrong", BODY))
    assert bad.returncode == 2  # --body-file is required
    bad = verify("--header", legacy_signature("qe_whsec_wrong", BODY), "--body-file", "-")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith("no_matching_signature")
