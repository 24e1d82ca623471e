#!/usr/bin/env python3
"""Interoperability check with an independent RFC 9421 implementation.

Signs calls to a running MConnect sandbox with Python's
`http-message-signatures` (not this project's code), sends them over mTLS
with `requests`, and verifies the broker's `mconnect-receipt` signature with
the same library. Exits 0 only when every call was accepted and every receipt
verified.

Usage: rfc9421_interop.py SANDBOX_DIR [PARTICIPANT ...]
"""

import hashlib
import json
import sys
import uuid
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)

ALGORITHMS = {
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "rsa-v1_5-sha256": algorithms.RSA_V1_5_SHA256,
}



def algorithm_of_certificate_key(key):
    """The algorithm a broker signs with, from its certificate's key type
    (PROTOCOL.md leaves the broker's key type to the operator; RSA keys sign
    rsa-pss-sha512)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return algorithms.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey):
        return algorithms.ECDSA_P256_SHA256
    if isinstance(key, rsa.RSAPublicKey):
        return algorithms.RSA_PSS_SHA512
    raise ValueError(f"unsupported broker key type {type(key).__name__}")


REQUEST_COMPONENTS = [
    "@method",
    "@target-uri",
    "mconnect-client",
    "mconnect-calling-user",
    "mconnect-call-basis",
    "mconnect-call-reason",
    "mconnect-request-id",
]

RECEIPT_COMPONENTS = (
    "@status",
    "content-digest",
    "mconnect-exchange-id",
    "mconnect-request-id",
    "mconnect-audit-seq",
)


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, private=None, public=None):
        self.private = private or {}
        self.public = public or {}

    def resolve_private_key(self, key_id):
        return self.private[key_id]

    def resolve_public_key(self, key_id):
        return self.public.get(key_id)


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def call(sandbox: Path, manifest: dict, entry: dict) -> dict:
    participant = next(p for p in manifest["participants"] if p["id"] == entry["client"])
    cert_path = sandbox / participant["cert"]
    key_path = sandbox / participant["key"]
    keyid = fingerprint(cert_path.read_bytes())
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)

    headers = {
        "MConnect-Client": entry["client"],
        "MConnect-Calling-User": "2000000000015",
        "MConnect-Call-Basis": entry["basis"],
        "MConnect-Call-Reason": entry["reason"],
        "MConnect-Request-Id": str(uuid.uuid4()),
    }
    covered = list(REQUEST_COMPONENTS)
    if entry.get("subject"):
        headers["MConnect-Subject"] = entry["subject"]
        covered.append("mconnect-subject")
    body = None
    if entry.get("body") is not None:
        body = json.dumps(entry["body"]).encode()
        headers["Content-Type"] = "application/json"
    request = requests.Request(
        entry["method"], manifest["broker"]["data_url"] + entry["path"], headers=headers, data=body
    ).prepare()
    signer = HTTPMessageSigner(
        signature_algorithm=ALGORITHMS[participant["alg"]],
        key_resolver=Keys(private={keyid: private_key}),
    )
    # With `body`, the library computes Content-Digest itself and covers it.
    signer.sign(request, key_id=keyid, label="mconnect", covered_component_ids=covered, body=body)

    with requests.Session() as session:
        response = session.send(
            request,
            cert=(str(cert_path), str(key_path)),
            verify=str(sandbox / manifest["ca"]),
            timeout=30,
        )

    broker_pem = (sandbox / manifest["broker"]["cert"]).read_bytes()
    broker_key = x509.load_pem_x509_certificate(broker_pem).public_key()
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm_of_certificate_key(broker_key),
        key_resolver=Keys(public={manifest["broker"]["keyid"]: broker_key}),
    )
    receipt_ok, receipt_error = False, None
    try:
        # The library filters by label only together with a tag; receipts
        # carry no tag, so verify every signature and pick the receipt by label.
        results = verifier.verify(
            response,
            require_components=RECEIPT_COMPONENTS,
            body=response.content,
        )
        receipt_ok = any(r.label == "mconnect-receipt" for r in results)
        if not receipt_ok:
            receipt_error = f"no mconnect-receipt among {[r.label for r in results]}"
    except Exception as error:  # report, do not hide: the caller asserts on it
        receipt_error = f"{type(error).__name__}: {error}"
    return {
        "client": entry["client"],
        "alg": participant["alg"],
        "service": entry["service"],
        "status": response.status_code,
        "audit_seq": response.headers.get("MConnect-Audit-Seq"),
        "receipt_verified": receipt_ok,
        "receipt_error": receipt_error,
        "body": response.text[:300],
    }


def main() -> int:
    sandbox = Path(sys.argv[1])
    wanted = set(sys.argv[2:])
    manifest = json.loads((sandbox / "sandbox.json").read_text())
    entries, seen = [], set()
    for entry in manifest["try"]:
        client = entry["client"]
        # One GET per calling participant (one per key type) and every POST.
        key = (client, entry["method"])
        if (wanted and client not in wanted) or key in seen:
            continue
        seen.add(key)
        entries.append(entry)
    if not entries:
        print("no try entries matched", file=sys.stderr)
        return 2
    results = [call(sandbox, manifest, e) for e in entries]
    print(json.dumps(results, indent=2, ensure_ascii=False))
    ok = all(r["status"] == 200 and r["receipt_verified"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
