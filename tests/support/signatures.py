"""A delivery's signatures checked as receivers check them: with Stripe's own verifier (our
`X-Quantum-Signature` is Stripe's format, under another header name) and with the service's
(`service.signing.verify_signature`, either header)."""

from __future__ import annotations

import stripe

from service.errors import SignatureError
from service.signing import QUANTUM_HEADER, verify_signature
from tools.receiver import Received

TOLERANCE = 300


def stripe_verifies(secret: str, got: Received) -> bool:
    """Stripe's own check (header name aside, ours is its format): raw body bytes, header."""
    try:
        stripe.WebhookSignature.verify_header(
            got.body, got.headers[QUANTUM_HEADER], secret, TOLERANCE
        )
    except stripe.SignatureVerificationError:
        return False
    return True


def we_verify(secret: str, got: Received, header: str = QUANTUM_HEADER) -> bool:
    """The service's own check of `header` (either format) against the raw body received."""
    try:
        verify_signature(secret, got.headers[header], got.body, tolerance=TOLERANCE)
    except SignatureError:
        return False
    return True
