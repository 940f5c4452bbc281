"""A small WinRM-like CredSSP endpoint built on pyspnego, independent of psfleet.

pyspnego's CredSSP acceptor (its own TLS over memory BIOs, its own TSRequest code, NTLM
inside SPNEGO, an RSA certificate it generates) authenticates each TCP connection from the
tokens in `Authorization: CredSSP <base64>`; afterwards every encrypted POST on that
connection is answered with an encrypted `<echo>` + plaintext + `</echo>`. Bodies are
framed here by hand (MS-WSMV 2.2.9.1.1.2 with the CredSSP rules of 2.2.9.1.3: one block
per 16 KiB chunk under multipart/x-multi-encrypted), sharing no code with psfleet-core.

Usage: NTLM_USER_FILE=<file> python credssp_endpoint.py

The credential file is pyspnego's (`DOMAIN:USER:PASSWORD` per line). The endpoint listens
on 127.0.0.1 on a free port, prints that port on one line of stdout, and exits when stdin
closes. After a successful exchange it prints `delegated <domain>\\<user> <password-ok>`
on stdout for the test to check (the password itself is never printed).
"""

import base64
import http.server
import os
import re
import struct
import sys
import threading

import spnego

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-CredSSP-session-encrypted"
CHUNK = 16 * 1024
MAX_BODY = 64 * 1024 * 1024
EXPECTED_PASSWORD = os.environ.get("CREDSSP_EXPECTED_PASSWORD", "")


class FramingError(Exception):
    """The body is not a well-formed CredSSP-encrypted body."""


def unframe(context, content_type, body):
    multi = re.match(r"multipart/x-multi-encrypted\s*;", content_type or "", re.I)
    if not multi and not re.match(r"multipart/encrypted\s*;", content_type or "", re.I):
        raise FramingError(f"content type {content_type!r}")
    if f'protocol="{PROTOCOL}"'.lower() not in content_type.lower():
        raise FramingError(f"protocol in {content_type!r}")
    end = BOUNDARY + b"--\r\n"
    if not body.endswith(end):
        raise FramingError("closing boundary")
    first = (
        BOUNDARY
        + b"\r\n\tContent-Type: "
        + PROTOCOL.encode()
        + b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
    )
    second = BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
    rest = body[: -len(end)]
    out = []
    while rest:
        if not rest.startswith(first):
            raise FramingError("first part")
        length_text, sep, rest = rest[len(first) :].partition(b"\r\n")
        if not sep or not length_text.isdigit():
            raise FramingError("Length")
        if not rest.startswith(second):
            raise FramingError("second part")
        rest = rest[len(second) :]
        (header_len,) = struct.unpack("<I", rest[:4])
        if header_len != 16:
            raise FramingError(f"TLS trailer length {header_len}, Windows writes 16 for GCM")
        # The block runs to the next boundary line: TLS record lengths say where.
        blob = rest[4:]
        record_end = 0
        while record_end < len(blob) and blob[record_end : record_end + len(BOUNDARY)] != BOUNDARY:
            if len(blob) < record_end + 5:
                raise FramingError("truncated TLS record")
            (record_len,) = struct.unpack(">H", blob[record_end + 3 : record_end + 5])
            record_end += 5 + record_len
        header, data = blob[:header_len], blob[header_len:record_end]
        plaintext = context.unwrap_winrm(header, data)
        if len(plaintext) != int(length_text):
            raise FramingError(f"Length {int(length_text)} != {len(plaintext)}")
        out.append(plaintext)
        rest = blob[record_end:]
    if len(out) > 1 and not multi:
        raise FramingError("several blocks under multipart/encrypted")
    return b"".join(out)


def frame(context, plaintext):
    chunks = [plaintext[i : i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    parts = []
    for chunk in chunks:
        wrapped = context.wrap_winrm(chunk)
        parts += [
            BOUNDARY,
            b"\r\n\tContent-Type: ",
            PROTOCOL.encode(),
            b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=%d\r\n" % len(chunk),
            BOUNDARY,
            b"\r\n\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(wrapped.header)),
            wrapped.header,
            wrapped.data,
        ]
    parts += [BOUNDARY, b"--\r\n"]
    media = "multipart/x-multi-encrypted" if len(chunks) > 1 else "multipart/encrypted"
    return f'{media};protocol="{PROTOCOL}";boundary="Encrypted Boundary"', b"".join(parts)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self):
        super().setup()
        self.context = None

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self.respond(413)
            return
        body = self.rfile.read(length)
        authorization = self.headers.get("Authorization")
        if authorization:
            self.authenticate(authorization)
            return
        if self.context is None or not self.context.complete:
            self.respond(401, token=None)
            return
        try:
            plaintext = unframe(self.context, self.headers.get("Content-Type"), body)
        except Exception as e:  # noqa: BLE001 - any failure is the test's evidence
            sys.stderr.write(f"credssp_endpoint: {e}\n")
            self.respond(400, extra=[("X-Problem", str(e)[:200])])
            return
        content_type, reply = frame(self.context, b"<echo>" + plaintext + b"</echo>")
        self.respond(200, body=reply, extra=[("Content-Type", content_type)])

    def authenticate(self, authorization):
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "credssp":
            self.respond(401, token=None)
            return
        if self.context is None:
            self.context = spnego.server(hostname="web01.fleet.test", service="HTTP", protocol="credssp")
        try:
            out = self.context.step(base64.b64decode(token))
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"credssp_endpoint: step failed: {e}\n")
            self.context = None
            self.respond(401, token=None)
            return
        if self.context.complete:
            cred = self.context.get_extra_info("client_credential")
            ok = "password-ok" if cred.password == EXPECTED_PASSWORD else "password-differs"
            print(f"delegated {cred.domain_name}\\{cred.username} {ok}", flush=True)
            self.respond(200, token=out)
        else:
            # Either the next TLS/TSRequest leg or an error TSRequest (wrong password).
            self.respond(401, token=out)

    def respond(self, status, token=None, body=b"", extra=()):
        self.send_response(status)
        if status == 401 and not token:
            self.send_header("WWW-Authenticate", "CredSSP")
        elif token:
            self.send_header("WWW-Authenticate", "CredSSP " + base64.b64encode(token).decode())
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
