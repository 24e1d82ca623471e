"""Schemathesis hooks for the admin API's conformance run (tests/openapi_conformance.rs).

The OpenAPI document says in JSON Schema what JSON Schema can say; a few
rules it can only state in words, and these hooks make the generated
*valid* requests obey them, so that "valid by the document" means valid:

- format `idno`: 13 digits whose last is the control digit (weights 7, 3, 1
  over the first twelve, modulo 10), as `mconnect_sdk::ids` checks;
- format `pem-certificate`: a PEM that reads as a certificate (the
  sandbox's);
- PUT /v1/participants/{id}: the body's `id` is the path's; a certificate
  is a real one of the bus CA, with its own fingerprint (the sandbox's, so
  the answer is 409 certificate.taken: they are registered to others);
- there and in PUT /v1/participants/{id}/endpoints, each service has one
  endpoint.

Negative cases are left alone: the server must refuse them as they are.
The sandbox directory comes from MCONNECT_SANDBOX_DIR.
"""

import base64
import hashlib
import os
import re
from pathlib import Path

import schemathesis
from hypothesis import strategies as st


def _control_digit(first12: str) -> str:
    weights = (7, 3, 1)
    total = sum(int(d) * weights[i % 3] for i, d in enumerate(first12))
    return str(total % 10)


schemathesis.openapi.format(
    "idno",
    st.from_regex(r"\A[0-9]{12}\Z").map(lambda twelve: twelve + _control_digit(twelve)),
)


def _sandbox_certificates() -> list[dict]:
    directory = os.environ.get("MCONNECT_SANDBOX_DIR")
    if not directory:
        return []
    out = []
    for path in sorted(Path(directory, "pki").glob("*.cert.pem")):
        if path.name.startswith(("ca.", "broker.")):
            continue
        pem = path.read_text()
        match = re.search(
            r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S
        )
        if not match:
            continue
        der = base64.b64decode("".join(match.group(1).split()))
        out.append({"pem": match.group(0) + "\n", "fingerprint": hashlib.sha256(der).hexdigest(), "not_after": 0})
    return out


CERTIFICATES = _sandbox_certificates()


def _is_positive(case) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return False
    return not any(component.mode.is_negative for component in meta.components.values())


def _one_per_service(endpoints):
    seen, unique = set(), []
    for endpoint in endpoints:
        key = endpoint.get("service") if isinstance(endpoint, dict) else None
        if key not in seen:
            seen.add(key)
            unique.append(endpoint)
    return unique


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _is_positive(case) or case.method.upper() != "PUT":
        return
    body = case.body
    if case.operation.path == "/v1/participants/{id}/endpoints" and isinstance(body, list):
        body = _one_per_service(body)
    elif case.operation.path == "/v1/participants/{id}" and isinstance(body, dict):
        path_id = (case.path_parameters or {}).get("id")
        if isinstance(path_id, str):
            body["id"] = path_id
        if isinstance(body.get("endpoints"), list):
            body["endpoints"] = _one_per_service(body["endpoints"])
        certificates = body.get("certificates")
        if isinstance(certificates, list) and certificates and CERTIFICATES:
            body["certificates"] = CERTIFICATES[: len(certificates)]
    else:
        return
    case.body = body
    # The request is serialised from `kwargs`, prepared before this hook.
    if "json" in kwargs:
        kwargs["json"] = body

if CERTIFICATES:
    # Format `pem-certificate`: a PEM that reads as an X.509 certificate.
    schemathesis.openapi.format(
        "pem-certificate", st.sampled_from([c["pem"] for c in CERTIFICATES])
    )
