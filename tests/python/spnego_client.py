"""An NTLM / SPNEGO WinRM client built on pyspnego, independent of psfleet.

It authenticates one keep-alive HTTP connection to a simulated host with empty-bodied
POSTs (as pywinrm and pypsrp set up message encryption), then sends a SOAP body sealed
with `wrap_winrm` in a multipart/encrypted body it frames by hand (MS-WSMV 2.2.9.1.1.2),
COUNT times on the same connection, and unseals each reply with `unwrap_winrm`.

Usage: SPNEGO_PASSWORD=<pw> python spnego_client.py --host ADDR --port N
           --protocol ntlm|negotiate --user USER --body FILE [--count N]
           [--tls --ca CA.PEM --server-name NAME [--cbt none|good|bad]]

With --tls the connection is HTTPS verified against CA.PEM for NAME; the SOAP body is sent
in plaintext after authentication (no message encryption over TLS), and --cbt binds the
NTLM exchange to the TLS channel (RFC 5929 tls-server-end-point of the server
certificate), to a wrong channel, or not at all.

Prints one JSON object: {"authenticated": bool, "status": <last auth status>,
"replies": [{"status", "encrypted", "body" (base64 of the unsealed reply)}]}.
The password comes from the environment, never from argv.
"""

import argparse
import base64
import http.client
import json
import os
import hashlib
import re
import socket
import ssl
import struct
import sys

import spnego

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'


def frame(context, plaintext):
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


def unframe(context, body):
    match = re.match(
        rb"--Encrypted Boundary\r\n\tContent-Type: ([^\r]+)\r\n"
        rb"\tOriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)\r\n"
        rb"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n",
        body,
    )
    if not match or match.group(1).decode().lower() != PROTOCOL.lower():
        raise ValueError("not an SPNEGO-encrypted body")
    rest = body[match.end():]
    end = BOUNDARY + b"--\r\n"
    if not rest.endswith(end):
        raise ValueError("no closing boundary")
    blob = rest[: -len(end)]
    (header_len,) = struct.unpack("<I", blob[:4])
    header, data = blob[4 : 4 + header_len], blob[4 + header_len :]
    plaintext = context.unwrap_winrm(header, data)
    if len(plaintext) != int(match.group(2)):
        raise ValueError("Length mismatch")
    return plaintext


def server_token(response):
    for value in response.headers.get_all("WWW-Authenticate") or []:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "negotiate" and token.strip():
            return base64.b64decode(token.strip())
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["ntlm", "negotiate"], required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca")
    parser.add_argument("--server-name")
    parser.add_argument("--cbt", choices=["none", "good", "bad"], default="none")
    args = parser.parse_args()
    password = os.environ["SPNEGO_PASSWORD"]
    with open(args.body, "rb") as f:
        soap = f.read()

    bindings = None
    if args.tls:
        tls = ssl.create_default_context(cafile=args.ca)
        raw = socket.create_connection((args.host, args.port), timeout=20)
        sock = tls.wrap_socket(raw, server_hostname=args.server_name)
        connection = http.client.HTTPSConnection(args.host, args.port, context=tls, timeout=20)
        connection.sock = sock
        if args.cbt != "none":
            # ECDSA with SHA-256 certificates: the hash is SHA-256 (RFC 5929 4.1).
            digest = hashlib.sha256(sock.getpeercert(binary_form=True)).digest()
            if args.cbt == "bad":
                digest = bytes(b ^ 0xFF for b in digest)
            bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=b"tls-server-end-point:" + digest
            )
    else:
        connection = http.client.HTTPConnection(args.host, args.port, timeout=20)
    context = spnego.client(
        args.user,
        password,
        hostname=args.server_name or args.host,
        service="HTTP",
        protocol=args.protocol,
        channel_bindings=bindings,
        context_req=spnego.ContextReq.default,
    )
    token = context.step()
    status = None
    for _ in range(4):
        connection.request(
            "POST",
            "/wsman",
            body=b"",
            headers={
                "Authorization": "Negotiate " + base64.b64encode(token).decode(),
                "Content-Type": "application/soap+xml;charset=UTF-8",
                "Connection": "Keep-Alive",
            },
        )
        response = connection.getresponse()
        response.read()
        status = response.status
        reply = server_token(response)
        if status == 200:
            if not context.complete and reply:
                context.step(reply)
            break
        if status != 401 or reply is None or context.complete:
            break
        token = context.step(reply)
    authenticated = status == 200 and context.complete
    replies = []
    if authenticated:
        for _ in range(args.count):
            if args.tls:
                body, content_type = soap, "application/soap+xml;charset=UTF-8"
            else:
                body, content_type = frame(context, soap), CONTENT_TYPE
            connection.request(
                "POST",
                "/wsman",
                body=body,
                headers={"Content-Type": content_type, "Connection": "Keep-Alive"},
            )
            response = connection.getresponse()
            body = response.read()
            content_type = response.headers.get("Content-Type", "")
            encrypted = content_type.lower().startswith("multipart/encrypted")
            plain = unframe(context, body) if encrypted else body
            replies.append(
                {
                    "status": response.status,
                    "encrypted": encrypted,
                    "body": base64.b64encode(plain).decode(),
                }
            )
    json.dump({"authenticated": authenticated, "status": status, "replies": replies}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
