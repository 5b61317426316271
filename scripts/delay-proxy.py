#!/usr/bin/env python3
"""A WAN-shaped link for benchmarks on a kernel without netem: a TCP relay on 127.0.0.1 that
holds every chunk ONE_WAY_MS before passing it on, in each direction. At most BUFFER_KIB per
direction are in flight, and a chunk's room is given back one more ONE_WAY_MS after it was
delivered, as an acknowledgement would come back: each connection through it behaves like
TCP with a BUFFER_KIB window on a path of twice ONE_WAY_MS round trip.

Usage: scripts/delay-proxy.py LISTEN_PORT TARGET_PORT ONE_WAY_MS [BUFFER_KIB=4096]
Loss is not modelled: a relay in user space terminates TCP, so lost packets would be resent
on the loopback leg before the delay applies. See docs/benchmarks.md.
"""
import asyncio
import sys


async def pipe(reader, writer, delay, buffer):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    room = asyncio.Semaphore(buffer // 65536)

    async def deliver():
        while True:
            item = await queue.get()
            if item is None:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            due, data = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            loop.call_later(delay, room.release)

    delivering = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await room.acquire()
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait(None)
    try:
        await delivering
    except (OSError, ConnectionError):
        pass


async def main():
    listen, target, one_way_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    buffer = int(sys.argv[4]) * 1024 if len(sys.argv) > 4 else 4 << 20
    delay = one_way_ms / 1000

    async def handle(c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            c_writer.close()
            return
        for w in (c_writer, s_writer):
            sock = w.get_extra_info("socket")
            sock.setsockopt(6, 1, 1)  # TCP_NODELAY
        await asyncio.gather(
            pipe(c_reader, s_writer, delay, buffer),
            pipe(s_reader, c_writer, delay, buffer),
            return_exceptions=True,
        )
        for w in (c_writer, s_writer):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
