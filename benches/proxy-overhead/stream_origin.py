"""An origin for the streaming check: POST reads and discards a Content-Length body
and answers 200 with the byte count; GET /bytes/N answers N zero bytes, written in
1 MiB chunks. Neither side ever holds more than one chunk, so any memory growth seen
during a transfer is the proxy's.

    python3 stream_origin.py 127.0.0.1:18185
"""
import asyncio
import sys

CHUNK = 1 << 20
ZEROS = bytes(CHUNK)


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if method == "POST":
                left = int(headers.get("content-length", "0"))
                total = left
                while left:
                    data = await reader.read(min(left, CHUNK))
                    if not data:
                        return
                    left -= len(data)
                body = f"{total}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            elif target.startswith("/bytes/"):
                left = int(target[len("/bytes/"):])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % left)
                while left:
                    n = min(left, CHUNK)
                    writer.write(ZEROS[:n])
                    await writer.drain()
                    left -= n
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(address):
    host, port = address.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
