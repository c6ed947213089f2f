#!/usr/bin/env python3
"""What a forward proxy does to WebSockets, next to what it does to SSE.

Usage: websocket_via_proxy.py PROXY_PORT POLLCAST_PORT (both on 127.0.0.1).

A minimal WebSocket server here completes the opening handshake (101 with
the right Sec-WebSocket-Accept) when a request asks for it, and answers 426
otherwise. Asserts:
  - control: the handshake sent to it directly gets 101, so the check below
    could see a handshake go through;
  - the same handshake sent through the proxy (absolute-form GET, as a
    client configured with an HTTP proxy sends it) gets no 101: the server
    receives it without its Upgrade header, and the answer carries the
    proxy's Via;
  - CONNECT 127.0.0.1:POLLCAST_PORT, which is how browsers tunnel ws://
    through an HTTP proxy, is refused with 403.
Written for Squid on Debian's default config (tests/clients/squid-proxy.sh),
which drops Upgrade (no http_upgrade_request_protocols) and has
`http_access deny CONNECT !SSL_ports`. Standard library only; exits non-zero
with a message on any mismatch.
"""

import base64
import hashlib
import socket
import sys
import threading

KEY = base64.b64encode(b"pollcast-squid-1").decode()
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def fail(message):
    print(f"squid-proxy: FAILED: websocket: {message}", file=sys.stderr)
    sys.exit(1)


def read_head(sock):
    """The status line and headers of a request or response, as text."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n")[0].decode("latin-1")


def wants_websocket(headers):
    return headers.get("upgrade", "").lower() == "websocket" and "upgrade" in headers.get("connection", "").lower()


def serve(listener, seen):
    """The handshake server: 101 to a WebSocket handshake, 426 to anything
    else; the headers of each request it got go to seen."""
    while True:
        conn, _ = listener.accept()
        with conn:
            headers = {}
            for line in read_head(conn).split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            seen.append(headers)
            if wants_websocket(headers):
                conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n").encode())
            else:
                conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def ask(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        return read_head(sock)


def main():
    proxy_port, pollcast_port = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.create_server(("127.0.0.1", 0))
    ws_port = listener.getsockname()[1]
    seen = []
    threading.Thread(target=serve, args=(listener, seen), daemon=True).start()

    def handshake(target):
        return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{ws_port}\r\nConnection: Upgrade\r\n"
                f"Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n")

    direct = ask(ws_port, handshake("/"))
    if not direct.startswith("HTTP/1.1 101") or ACCEPT not in direct:
        fail(f"control: the handshake server did not accept a direct handshake: {direct!r}")

    via = ask(proxy_port, handshake(f"http://127.0.0.1:{ws_port}/"))
    status = via.split("\r\n")[0]
    if status.split(" ")[1:2] == ["101"]:
        fail(f"a WebSocket handshake went through squid: {via!r}")
    if "squid" not in via.lower():
        fail(f"the handshake answer does not come through squid: {via!r}")
    if len(seen) != 2 or wants_websocket(seen[1]):
        fail(f"through squid the handshake server saw {seen[1:]}, expected one request without Upgrade")

    connect = ask(proxy_port, f"CONNECT 127.0.0.1:{pollcast_port} HTTP/1.1\r\nHost: 127.0.0.1:{pollcast_port}\r\n\r\n")
    connect_status = connect.split("\r\n")[0]
    if not connect_status.startswith("HTTP/1.1 403"):
        fail(f"squid did not refuse CONNECT to port {pollcast_port}: {connect_status!r}")

    print(f"squid-proxy: WebSocket blocked: a handshake answered 101 directly reaches the server through "
          f"squid without Upgrade ({status}); CONNECT 127.0.0.1:{pollcast_port}: {connect_status}")


if __name__ == "__main__":
    main()
