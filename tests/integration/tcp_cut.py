"""A TCP forwarder on a loopback port in front of a server (here moto's S3 server) that can
stop mid-transfer: once `arm(direction, budget)` has let `budget` bytes pass one way, it
resets every open connection and closes its listening socket — what a client sees when the
server dies in the middle of a transfer (connections reset, then connection refused) — while
the server behind it keeps what it stored. `reopen()` listens again on the same port."""

from __future__ import annotations

import socket
import struct
import threading

UP, DOWN = "up", "down"  # client -> server (an upload), server -> client (a download)


class CuttingProxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream, self.port = ("127.0.0.1", upstream_port), port
        self.url = f"http://127.0.0.1:{port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._armed: tuple[str, int] | None = None
        self.passed = {UP: 0, DOWN: 0}
        self.cut = threading.Event()  # set once the budget ran out (stays set until reopen)
        self._listener: socket.socket | None = None
        self.reopen()

    def arm(self, direction: str, budget: int) -> None:
        """Stop the server once `budget` more bytes passed in `direction`."""
        with self._lock:
            self.passed = {UP: 0, DOWN: 0}
            self._armed = (direction, budget)

    def reopen(self) -> None:
        """Listen again (same port), disarmed: the server is back."""
        with self._lock:
            self._armed = None
            self.cut.clear()
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Stop for good (the test's end)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:  # with the lock held
        if self._listener is not None:
            _wake(self._listener)  # accept() returns; the port refuses from now on
            self._listener.close()
            self._listener = None
        for sock in self._open:
            # RST on close, not FIN; shutdown wakes the pump blocked in recv, which closes
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            _wake(sock, socket.SHUT_RD)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    for sock in (client, upstream):
                        sock.close()
                    continue
                self._open |= {client, upstream}
            for src, dst, direction in ((client, upstream, UP), (upstream, client, DOWN)):
                threading.Thread(target=self._pump, args=(src, dst, direction),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                break
            with self._lock:
                if not data or self.cut.is_set():
                    break
                if self._armed and self._armed[0] == direction:
                    self.passed[direction] += len(data)
                    if self.passed[direction] >= self._armed[1]:
                        self.cut.set()
                        self._stop()
                        break
            try:
                dst.sendall(data)
            except OSError:
                break
        with self._lock:  # an end (EOF) wakes the other pump; after a cut, RST only
            for sock in (src, dst):
                self._open.discard(sock)
                _wake(sock, socket.SHUT_RD if self.cut.is_set() else socket.SHUT_RDWR)
                sock.close()


def _wake(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass
