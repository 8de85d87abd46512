"""A TCP forwarder on 127.0.0.1 in front of the test sshd, to break one ssh connection for real.

The first connection that sends more than `limit` bytes from the client (only an upload does: key
exchange and commands are a few KiB) trips it: `cut` closes both sides at once (a network cut),
`stall` stops forwarding and holds the sockets open (a hung link, so the test can kill the client
mid-upload). Every later connection is forwarded untouched. Only loopback; threads end when their
sockets close, and `close()` closes everything.
"""

from __future__ import annotations

import socket
import threading


class BreakingProxy:
    def __init__(self, target_port: int, limit: int, mode: str) -> None:
        assert mode in ("cut", "stall")
        self.target_port, self.limit, self.mode = target_port, limit, mode
        self.tripped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                sent += len(data) if from_client else 0
                if from_client and sent > self.limit and not self.tripped.is_set():
                    self.tripped.set()
                    if self.mode == "cut":
                        break
                    self._hold(source)
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    @staticmethod
    def _hold(source: socket.socket) -> None:
        """Read and drop what the client sends until it goes away: nothing reaches the server."""
        while source.recv(1 << 16):
            pass

    def close(self) -> None:
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass
