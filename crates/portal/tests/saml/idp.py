#!/usr/bin/env python3
"""A real SAML 2.0 identity provider for the portal's MPass tests.

It is PyPI's pysaml2 on the identity provider's side (saml2.server.Server),
which signs with Debian's xmlsec1, served over HTTP on 127.0.0.1 like MPass's
HTTP-POST binding: the browser posts an AuthnRequest to /sso, and gets back
an HTML form that posts the signed Response to the service provider's
assertion consumer service.

    idp.py DIR

At start it makes, in DIR, its own signing key and certificate (idp.key,
idp.crt), a second key the service provider does not know (foreign.key,
foreign.crt), and its metadata (idp-metadata.xml); then it prints
`LISTENING http://127.0.0.1:PORT` and serves until stdin closes or it is
killed. The service provider's metadata is read from DIR/sp-metadata.xml at
each request, so the test writes it once it knows it.

Who signs in, and how the answer is made, is said in the query string of
/sso (the tests play the person at MPass's login page):

    idnp, first_name, last_name, legal_entity   the person and attributes
    variant                                      one of VARIANTS below

Nothing here checks what the service provider must check: this side only
makes the messages a real IdP would, correct or (on request) not.
"""

import datetime
import http.server
import os
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import saml2
import saml2.time_util
import saml2.xmldsig
from saml2 import BINDING_HTTP_POST
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.saml import AUTHN_PASSWORD_PROTECTED
from saml2.server import Server

# How each variant departs from MPass's usual answer: which parts are signed,
# with which key and algorithms, under which issuer, for which audience and
# destination, at which clock offset (seconds), with which status.
VARIANTS = {
    # MPass's usual answer: the assertion signed.
    "ok": {},
    # The Response signed around an unsigned assertion.
    "signed-response": {"sign_assertion": False, "sign_response": True},
    # Both signed.
    "both-signed": {"sign_response": True},
    # Nothing signed.
    "unsigned": {"sign_assertion": False},
    # Signed with a key that is not in the metadata the SP has.
    "foreign-key": {"key": "foreign"},
    # Issued two hours ago (the IdP's clock set back), valid for 15 minutes.
    "expired": {"clock_offset": -7200},
    # Issued for another service provider.
    "wrong-audience": {"audience": "https://elsewhere.example/sp"},
    # Posted to another service provider's consumer service.
    "wrong-destination": {"destination": "https://elsewhere.example/saml/acs"},
    # Signed with the right key but under another entity id.
    "wrong-issuer": {"issuer": "https://impostor.example/idp"},
    # The person did not authenticate (a signed error response).
    "failed": {"status": "failed"},
    # Signed with RSA-SHA1 and SHA-1 digests, pysaml2's own default.
    "sha1": {"algorithms": "sha1"},
}

# Signature and digest algorithms: MPass signs with RSA-SHA256.
ALGORITHMS = {
    "sha256": (saml2.xmldsig.SIG_RSA_SHA256, saml2.xmldsig.DIGEST_SHA256),
    "sha1": (saml2.xmldsig.SIG_RSA_SHA1, saml2.xmldsig.DIGEST_SHA1),
}

LIFETIME = {"minutes": 15}


def make_key(directory, name):
    """A 2048-bit RSA key and a self-signed certificate, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name} idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, f"{name}.key")
    cert_path = os.path.join(directory, f"{name}.crt")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def config(directory, base_url, key, entity_id, with_sp=True):
    """pysaml2's IdP configuration."""
    key_path = os.path.join(directory, f"{key}.key")
    cert_path = os.path.join(directory, f"{key}.crt")
    sp_metadata = os.path.join(directory, "sp-metadata.xml")
    settings = {
        "entityid": entity_id,
        "service": {
            "idp": {
                "name": "Test MPass",
                "endpoints": {
                    "single_sign_on_service": [(f"{base_url}/sso", BINDING_HTTP_POST)],
                },
                "policy": {
                    "default": {
                        "lifetime": LIFETIME,
                        "attribute_restrictions": None,
                        "name_form": saml2.saml.NAME_FORMAT_BASIC,
                    },
                },
                "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                "want_authn_requests_signed": False,
                "sign_assertion": True,
                "sign_response": False,
            },
        },
        "key_file": key_path,
        "cert_file": cert_path,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "delete_tmpfiles": True,
        "metadata": {"local": [sp_metadata]} if with_sp else {},
    }
    conf = IdPConfig()
    conf.load(settings)
    return conf


class ShiftedClock:
    """The IdP's clock set off by `offset` seconds while a response is made:
    pysaml2 reads the time through saml2.time_util's `time` and `datetime`."""

    lock = threading.Lock()

    def __init__(self, offset):
        self.offset = offset

    def __enter__(self):
        self.lock.acquire()
        if self.offset:
            offset = self.offset
            real_time = time
            real_datetime = datetime.datetime

            class Time:
                def __getattr__(self, name):
                    return getattr(real_time, name)

                def time(self):
                    return real_time.time() + offset

                def gmtime(self, seconds=None):
                    return real_time.gmtime(real_time.time() + offset if seconds is None else seconds)

            class DateTime(real_datetime):
                @classmethod
                def now(cls, tz=None):
                    return real_datetime.now(tz) + datetime.timedelta(seconds=offset)

                @classmethod
                def utcnow(cls):
                    return real_datetime.utcnow() + datetime.timedelta(seconds=offset)

            self.saved = (saml2.time_util.time, saml2.time_util.datetime)
            saml2.time_util.time = Time()
            saml2.time_util.datetime = DateTime
        return self

    def __exit__(self, *exc):
        if self.offset:
            saml2.time_util.time, saml2.time_util.datetime = self.saved
        self.lock.release()
        return False


class Handler(http.server.BaseHTTPRequestHandler):
    directory = ""
    base_url = ""
    entity_id = ""

    def log_request(self, code="-", size="-"):
        pass  # errors only (log_error)

    def log_message(self, format, *args):
        sys.stderr.write("idp: " + (format % args) + "\n")

    def answer(self, status, body, content_type="text/html; charset=utf-8"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/metadata":
            with open(os.path.join(self.directory, "idp-metadata.xml"), encoding="utf-8") as f:
                self.answer(200, f.read(), "application/samlmetadata+xml")
        else:
            self.answer(404, "not found")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/sso":
            self.answer(404, "not found")
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("ascii")))
        variant = VARIANTS.get(query.get("variant", "ok"))
        if variant is None or "SAMLRequest" not in form:
            self.answer(400, "unknown variant or no SAMLRequest")
            return
        try:
            html = self.respond(query, form, variant)
        except Exception as e:  # the test reads the message
            self.answer(500, f"idp: {type(e).__name__}: {e}")
            raise
        self.answer(200, html)

    def respond(self, query, form, variant):
        issuer = variant.get("issuer", self.entity_id)
        idp = Server(
            config=config(self.directory, self.base_url, variant.get("key", "idp"), issuer)
        )
        request = idp.parse_authn_request(form["SAMLRequest"], BINDING_HTTP_POST)
        args = idp.response_args(request.message, [BINDING_HTTP_POST])
        destination = variant.get("destination", args["destination"])
        relay_state = form.get("RelayState", "")
        sign_alg, digest_alg = ALGORITHMS[variant.get("algorithms", "sha256")]
        with ShiftedClock(variant.get("clock_offset", 0)):
            if variant.get("status") == "failed":
                response = idp.create_error_response(
                    args["in_response_to"],
                    destination,
                    (saml2.samlp.STATUS_AUTHN_FAILED, "the person cancelled"),
                    sign=True,
                    sign_alg=sign_alg,
                    digest_alg=digest_alg,
                )
            else:
                identity = {"FirstName": [query.get("first_name", "")],
                            "LastName": [query.get("last_name", "")],
                            "Language": ["ro"]}
                if query.get("legal_entity"):
                    identity["AdministeredLegalEntity"] = [query["legal_entity"]]
                response = idp.create_authn_response(
                    identity,
                    in_response_to=args["in_response_to"],
                    destination=destination,
                    sp_entity_id=variant.get("audience", args["sp_entity_id"]),
                    name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=query["idnp"]),
                    authn={"class_ref": AUTHN_PASSWORD_PROTECTED},
                    sign_assertion=variant.get("sign_assertion", True),
                    sign_response=variant.get("sign_response", False),
                    sign_alg=sign_alg,
                    digest_alg=digest_alg,
                )
        binding = idp.apply_binding(
            BINDING_HTTP_POST, str(response), destination, relay_state, response=True
        )
        return binding["data"]


def main():
    directory = sys.argv[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    entity_id = f"{base_url}/metadata"
    make_key(directory, "idp")
    make_key(directory, "foreign")
    with open(os.path.join(directory, "idp-metadata.xml"), "w", encoding="utf-8") as f:
        f.write(str(entity_descriptor(config(directory, base_url, "idp", entity_id, with_sp=False))))
    Handler.directory = directory
    Handler.base_url = base_url
    Handler.entity_id = entity_id
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"LISTENING {base_url}", flush=True)
    # The test holds our stdin: when it ends, so do we.
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
