#!/usr/bin/env python3
"""Footprint and latency probes for burrow (stdlib only; loopback only).

  footprint.py echo PORT            TCP echo server (asyncio), for a target that holds many connections
  footprint.py rr ADDR N [SIZE]     N sequential SIZE-byte request/responses on one connection;
                                    prints p50/p99/mean in microseconds
  footprint.py hold ADDR N          opens N connections (each round-trips one byte so it is fully
                                    established end to end), prints "held N", then holds them until
                                    stdin closes
"""
import asyncio
import socket
import sys
import time


async def echo(port):
    async def serve(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def rr(addr, n, size):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * size
    lat = []
    for i in range(n + 200):
        t = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < size:
            chunk = s.recv(size - got)
            if not chunk:
                raise SystemExit("connection closed")
            got += len(chunk)
        if i >= 200:  # warm-up excluded
            lat.append((time.perf_counter_ns() - t) / 1000)
    lat.sort()
    print(f"p50_us={lat[len(lat) // 2]:.1f} p99_us={lat[int(len(lat) * 0.99)]:.1f} mean_us={sum(lat) / len(lat):.1f} n={n}")


def hold(addr, n):
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise SystemExit("no echo")
        socks.append(s)
    print(f"held {len(socks)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "echo":
        asyncio.run(echo(int(sys.argv[2])))
    elif cmd == "rr":
        rr(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 64)
    elif cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
