"""A SAML 2.0 identity provider for the tests: a real pysaml2 IdP in its own process on loopback,
signing real assertions with xmlsec1 under an RSA key it generates at start.

    python -m tests.identity.saml_idp DIRECTORY PORT

- `GET /metadata`: its IdP metadata (the entity id, the HTTP-Redirect SSO endpoint, the signing
  certificate), as a tenant admin would download it.
- `POST /trust`: the body is a service provider's metadata, which the IdP then trusts (an admin
  uploading the SP's metadata at the IdP).
- `GET /sso?SAMLRequest=…&RelayState=…&login=EMAIL`: signs `EMAIL` in (no password page: the
  test is the user) and answers the HTML form that posts the response to the SP's ACS.

The negative cases of the tests need an IdP that misbehaves the way attackers or broken IdPs do,
so `/sso` takes knobs a real IdP does not have: `sign=none|response|both`, `key=rogue` (sign
with a key the metadata does not name), `audience=…`, `destination=…`, `in_response_to=…`,
`skew=SECONDS` (the IdP's clock runs that far off), `name_id=transient` (no email NameID).
"""

from __future__ import annotations

import base64
import datetime
import html
import shutil
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_TRANSIENT, NameID
from saml2.server import Server


def make_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An RSA-2048 key and a self-signed certificate for it, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tenantguard test {name}")])
    now = datetime.datetime.now(datetime.UTC)
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
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class Idp:
    def __init__(self, directory: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.keys = {name: make_key(directory, name) for name in ("idp", "rogue")}
        self.trusted: list[str] = []
        self.servers = self._servers()

    def _config(self, key: str) -> dict[str, Any]:
        key_file, cert_file = self.keys[key]
        return {
            "entityid": self.base + "/metadata",
            "xmlsec_binary": shutil.which("xmlsec1"),
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "metadata": {"inline": list(self.trusted)},
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [(self.base + "/sso", BINDING_HTTP_REDIRECT)]
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    "policy": {"default": {"lifetime": {"minutes": 5}}},
                }
            },
        }

    def _servers(self) -> dict[str, Server]:
        return {name: Server(config=IdPConfig().load(self._config(name))) for name in self.keys}

    def metadata(self) -> str:
        return str(entity_descriptor(IdPConfig().load(self._config("idp"))))

    def trust(self, sp_metadata: str) -> None:
        self.trusted.append(sp_metadata)
        self.servers = self._servers()

    def sso(self, query: dict[str, str]) -> str:
        server = self.servers[query.get("key", "idp")]
        request = server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT).message
        email = query["login"]
        destination = query.get("destination", request.assertion_consumer_service_url)
        sign = query.get("sign", "assertion")
        if query.get("name_id") == "transient":
            name_id = NameID(format=NAMEID_FORMAT_TRANSIENT, text="a1b2c3")
        else:
            name_id = NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email)
        skew = float(query.get("skew", "0"))
        real_gmtime = time.gmtime

        class Skewed(datetime.datetime):
            @classmethod
            def now(cls, tz: datetime.tzinfo | None = None) -> Skewed:
                moment = datetime.datetime.now(tz) + datetime.timedelta(seconds=skew)
                return cls.fromtimestamp(moment.timestamp(), tz)

        def gmtime(stamp: float | None = None) -> time.struct_time:
            return real_gmtime(time.time() + skew if stamp is None else stamp)

        # pysaml2 reads the time through time.gmtime (instants) and datetime.now (lifetimes).
        with (
            mock.patch("saml2.time_util.datetime", Skewed),
            mock.patch("saml2.time_util.time.gmtime", gmtime),
        ):
            response = server.create_authn_response(
                {"mail": [email]},
                in_response_to=query.get("in_response_to", request.id),
                destination=destination,
                sp_entity_id=query.get("audience", request.issuer.text),
                name_id=name_id,
                authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
                sign_assertion=sign in ("assertion", "both"),
                sign_response=sign in ("response", "both"),
            )
        encoded = base64.b64encode(str(response).encode()).decode()
        relay = html.escape(query.get("RelayState", ""), quote=True)
        return (
            f'<html><body onload="document.forms[0].submit()"><form method="post"'
            f' action="{html.escape(destination, quote=True)}">'
            f'<input type="hidden" name="SAMLResponse" value="{encoded}"/>'
            f'<input type="hidden" name="RelayState" value="{relay}"/>'
            "</form></body></html>"
        )


def serve(directory: Path, port: int) -> None:
    idp = Idp(directory, port)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: str, kind: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            try:
                if parts.path == "/metadata":
                    self._answer(200, idp.metadata(), "application/samlmetadata+xml")
                elif parts.path == "/sso":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    self._answer(200, idp.sso(query), "text/html")
                else:
                    self._answer(404, "not found", "text/plain")
            except Exception as exc:  # noqa: BLE001 (a test IdP: report, keep serving)
                self._answer(500, f"{type(exc).__name__}: {exc}", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            if urlsplit(self.path).path == "/trust":
                idp.trust(body)
                self._answer(204, "", "text/plain")
            else:
                self._answer(404, "not found", "text/plain")

        def log_message(self, *_: Any) -> None:  # quiet: the tests read answers, not logs
            return

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
