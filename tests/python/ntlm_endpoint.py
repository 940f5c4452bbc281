"""A small WinRM-like HTTP endpoint built on pyspnego, independent of psfleet.

It authenticates each TCP connection with pyspnego's NTLM / SPNEGO acceptor, then answers
every encrypted POST on that connection with an encrypted `<echo>` + plaintext + `</echo>`.
The multipart framing (MS-WSMV 2.2.9.1.1.2) is parsed and written here, by hand and
strictly, so the Rust client's framing is checked against an implementation that shares
no code with psfleet-core.

Usage: NTLM_USER_FILE=<file> python ntlm_endpoint.py [--offer SCHEME]... [--verbose]
       [--tls-cert PEM --tls-key PEM [--cbt | --wrong-cbt]]

With --tls-cert the endpoint speaks HTTPS (Python's ssl module, TLS 1.2+). --cbt makes the
acceptor require the client's channel binding for that certificate: the
`tls-server-end-point` application data is computed here with `cryptography`, by the
RFC 5929 4.1 rule (the certificate's signature hash, SHA-256 in place of MD5/SHA-1), the
way pypsrp does it; --wrong-cbt requires a binding for another certificate, so a
correctly bound client must be refused. Over HTTPS a plaintext message on an
authenticated connection is answered in plaintext (TLS protects it), as WinRM does.

The credential file is pyspnego's (`DOMAIN:USER:PASSWORD` per line, `:user@dom:pw` for a
UPN). The endpoint listens on 127.0.0.1 on a free port and prints that port on one line of
stdout. It exits when stdin closes, so it never outlives the test that started it.

Test hooks, chosen by the start of the decrypted request:
- `<fault`  -> the echo is sent with HTTP 500 (a WS-Man fault travels that way);
- `<plain/>` -> HTTP 200 with an UNENCRYPTED body (a protocol violation);
- `<close/>` -> the connection is closed with no response;
- `<sleep/>` -> the answer is delayed by 3 seconds;
- `<refuse/>` -> HTTP 500 with an empty body (refused before decrypting);
- `<unauthorized/>` -> HTTP 401 offering the configured schemes.
Requests whose headers differ from `--expect-header NAME:VALUE` (repeatable), or whose
Host is not 127.0.0.1:<port>, get HTTP 400 with the reason in an `X-Problem` header.
A path other than /wsman gets 404. An unencrypted POST on an authenticated connection gets HTTP 500 with an empty body, as
Windows does when AllowUnencrypted is false.
"""

import argparse
import base64
import hashlib
import http.server
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time

import spnego

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
MAX_BODY = 64 * 1024 * 1024


class FramingError(Exception):
    """The request body is not a well-formed single-block SPNEGO-encrypted body."""


def unframe(context, content_type, body):
    """Parses one encrypted block exactly as Windows writes it and unwraps it."""
    if not re.match(r"multipart/encrypted\s*;", content_type or "", re.I):
        raise FramingError(f"content type {content_type!r}")
    if f'protocol="{PROTOCOL}"'.lower() not in content_type.lower():
        raise FramingError(f"protocol in {content_type!r}")
    first = (
        BOUNDARY
        + b"\r\n\tContent-Type: "
        + PROTOCOL.encode()
        + b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
    )
    if not body.startswith(first):
        raise FramingError("first part")
    length_text, sep, rest = body[len(first) :].partition(b"\r\n")
    if not sep or not length_text.isdigit():
        raise FramingError("Length")
    second = BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
    if not rest.startswith(second):
        raise FramingError("second part")
    end = BOUNDARY + b"--\r\n"
    if not rest.endswith(end):
        raise FramingError("closing boundary")
    blob = rest[len(second) : -len(end)]
    if len(blob) < 4:
        raise FramingError("signature length")
    (header_len,) = struct.unpack("<I", blob[:4])
    if header_len != 16 or len(blob) < 4 + header_len:
        raise FramingError(f"signature length {header_len}")
    header, data = blob[4 : 4 + header_len], blob[4 + header_len :]
    plaintext = context.unwrap_winrm(header, data)
    if len(plaintext) != int(length_text):
        raise FramingError(f"Length {int(length_text)} != {len(plaintext)}")
    return plaintext


def frame(context, plaintext):
    """Wraps a reply as one encrypted block (MS-WSMV 2.2.9.1.1.2.2)."""
    wrapped = context.wrap_winrm(plaintext)
    length = len(plaintext) + wrapped.padding_length
    return b"".join(
        [
            BOUNDARY,
            b"\r\n\tContent-Type: ",
            PROTOCOL.encode(),
            b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=%d\r\n" % length,
            BOUNDARY,
            b"\r\n\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(wrapped.header)),
            wrapped.header,
            wrapped.data,
            BOUNDARY,
            b"--\r\n",
        ]
    )


class Handler(http.server.BaseHTTPRequestHandler):
    """One instance per TCP connection: the security context lives on it."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle holds the body
    # until the client's delayed ACK (about 40 ms per reply).
    disable_nagle_algorithm = True
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    offered = ["Negotiate"]
    expected_headers = []
    verbose = False
    tls = False
    channel_bindings = None

    def setup(self):
        super().setup()
        self.context = None

    def log_message(self, format, *args):
        if self.verbose:
            sys.stderr.write("ntlm_endpoint: " + (format % args) + "\n")

    def do_GET(self):
        self.respond(405, extra=[("Allow", "POST")])

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self.respond(413)
            return
        body = self.rfile.read(length)
        problem = self.header_problem()
        if problem:
            self.log_message("bad request: %s", problem)
            self.respond(400, extra=[("X-Problem", problem)])
            return
        if self.path != "/wsman":
            self.respond(404)  # WinRM's answer to a wrong path (wire-facts 1.7)
            return
        authorization = self.headers.get("Authorization")
        if authorization:
            self.authenticate(authorization, body)
        elif self.context is None or not self.context.complete:
            self.respond(401, challenges=self.offered)
        else:
            self.message(body)

    def header_problem(self):
        host = "127.0.0.1:%d" % self.server.server_address[1]
        for name, value in [("Host", host)] + self.expected_headers:
            found = self.headers.get_all(name) or []
            if found != [value]:
                return f"{name} is {found!r}, expected {value!r}"
        if len(self.headers.get_all("Content-Length") or []) != 1:
            return "no single Content-Length"
        return None

    def authenticate(self, authorization, body):
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "negotiate" or not any(
            o.split(" ")[0].lower() == "negotiate" for o in self.offered
        ):
            self.respond(401, challenges=self.offered)
            return
        if self.context is None or self.context.complete:
            self.context = spnego.server(protocol="negotiate", channel_bindings=self.channel_bindings)
        try:
            out = self.context.step(base64.b64decode(token.strip(), validate=True))
        except Exception as error:  # any refusal is the final 401 with the bare list
            self.log_message("authentication failed: %s", error)
            self.context = None
            self.respond(401, challenges=self.offered)
            return
        challenge = ["Negotiate " + base64.b64encode(out).decode()] if out else []
        if not self.context.complete:
            self.respond(401, challenges=challenge)
        elif body:
            self.message(body, challenges=challenge)
        else:
            self.respond(200, challenges=challenge)

    def message(self, body, challenges=()):
        content_type = self.headers.get("Content-Type", "")
        if not content_type.lower().startswith("multipart/encrypted"):
            if self.tls and body:
                reply = b"<echo>" + body + b"</echo>"
                status = 500 if body.startswith(b"<fault") else 200
                self.respond(status, body=reply, content_type="application/soap+xml;charset=UTF-8")
            else:
                self.respond(500)
            return
        try:
            plaintext = unframe(self.context, content_type, body)
        except Exception as error:
            self.log_message("cannot unwrap: %r", error)
            self.respond(400)
            return
        if plaintext.startswith(b"<close/>"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if plaintext.startswith(b"<refuse/>"):
            self.respond(500)
            return
        if plaintext.startswith(b"<unauthorized/>"):
            self.respond(401, challenges=self.offered)
            return
        if plaintext.startswith(b"<sleep/>"):
            time.sleep(3)
        reply = b"<echo>" + plaintext + b"</echo>"
        if plaintext.startswith(b"<plain/>"):
            self.respond(200, body=reply, content_type="application/soap+xml;charset=UTF-8")
            return
        status = 500 if plaintext.startswith(b"<fault") else 200
        self.respond(status, body=frame(self.context, reply), content_type=ENCRYPTED_CONTENT_TYPE, challenges=challenges)

    def respond(self, status, body=b"", content_type=None, challenges=(), extra=()):
        self.send_response(status)
        for challenge in challenges:
            self.send_header("WWW-Authenticate", challenge)
        for name, value in extra:
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def end_point_bindings(cert_pem):
    """The tls-server-end-point channel bindings of a PEM certificate (RFC 5929 4.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from spnego.channel_bindings import GssChannelBindings

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:  # Ed25519 and friends name no hash: SHA-256, as pypsrp
        algorithm = None
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offer", action="append", help="a WWW-Authenticate challenge to offer (repeatable)")
    parser.add_argument("--expect-header", action="append", default=[], help="NAME:VALUE every request must carry")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--cbt", action="store_true", help="require channel bindings for the certificate")
    parser.add_argument("--wrong-cbt", action="store_true", help="require channel bindings for another certificate")
    args = parser.parse_args()
    if not os.path.isfile(os.environ.get("NTLM_USER_FILE", "")):
        parser.error("NTLM_USER_FILE must name the pyspnego credential file")
    Handler.offered = args.offer or ["Negotiate"]
    Handler.expected_headers = [tuple(h.split(":", 1)) for h in args.expect_header]
    Handler.verbose = args.verbose

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        Handler.tls = True
        with open(args.tls_cert, "rb") as f:
            cert_pem = f.read()
        if args.cbt:
            Handler.channel_bindings = end_point_bindings(cert_pem)
        elif args.wrong_cbt:
            bindings = end_point_bindings(cert_pem)
            bindings.application_data = b"tls-server-end-point:" + hashlib.sha256(b"another certificate").digest()
            Handler.channel_bindings = bindings
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
