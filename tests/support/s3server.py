"""A real S3 server on loopback (moto in server mode) and a small HTTP proxy in front of it that can
slow requests down, answer 503 a few times, and count the GETs per key."""

import http.client
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.server import ThreadedMotoServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


class MotoS3:
    """moto's threaded server on 127.0.0.1 at a free port."""

    def __init__(self):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self):
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc):
        self.server.stop()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        proxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.path.split("?")[0]
        with proxy.lock:
            if self.command == "GET":
                proxy.gets[key] += 1
            seen = proxy.seen[key] = proxy.seen[key] + 1
        if proxy.delay:
            time.sleep(proxy.delay)
        if seen <= proxy.fail_first:
            with proxy.lock:
                proxy.failures += 1
            payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


class S3Proxy(ThreadingHTTPServer):
    """Forward to `upstream_url`, with `delay` seconds per request and a 503 for the first
    `fail_first` requests of each path. `gets` counts GETs per path."""

    daemon_threads = True

    def __init__(self, upstream_url, delay=0.0, fail_first=0):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        host, port = upstream_url.split("//")[1].split(":")
        self.upstream_host, self.upstream_port = host, int(port)
        self.delay, self.fail_first = delay, fail_first
        self.lock = threading.Lock()
        self.gets, self.seen, self.failures = Counter(), Counter(), 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
