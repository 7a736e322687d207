"""The listening socket, bound before the server says where it listens (server layer).

uvicorn binds inside its own startup, after the app's lifespan ran and after we printed the
URL, and turns a taken port into a logged errno and exit code 3. Binding first makes every way
this can fail one `AddressUnavailable` with a message for people, before anything is printed.
"""

from __future__ import annotations

import errno
import socket

from ..errors import AddressUnavailable


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (0: any free port).

    Raises:
        AddressUnavailable: the port is taken or privileged, or the host is not this machine's.
    """
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise AddressUnavailable(
            f"cannot listen on {host!r}: unknown host ({exc.strerror})"
        ) from None
    except OverflowError:
        raise AddressUnavailable(f"cannot listen on port {port}: ports are 0-65535") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restart may bind while the last run's connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise AddressUnavailable(_reason(where, exc)) from None
    return sock


def _reason(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use (another server?); stop it or pick another --port"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); pick another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: that address is not one of this machine's"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def url_of(sock: socket.socket) -> str:
    """http://host:port of a bound socket, with the port it really got (for --port 0)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
