"""porthold in a pytest suite.

`http_server` starts a server with `porthold run --ephemeral`: porthold binds a
kernel-chosen port first and hands the bound socket to the server as fd 3
(LISTEN_FDS), so no other process can take the port in between. `porthold
wait` and `porthold url` find it by name.

For a server that can only be told a port number, `porthold pick` leases one
(outside the kernel's ephemeral range, free at handout) to this test process.
"""

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

# A server that takes its listening socket from fd 3 instead of binding.
SERVE_FD3 = """
import http.server, socket
class Server(http.server.ThreadingHTTPServer):
    def server_bind(self): pass
    def server_activate(self): pass
httpd = Server(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler, False)
httpd.socket.close()
httpd.socket = socket.socket(fileno=3)
httpd.serve_forever()
"""

# A server that binds the port it is given, and says so once it listens.
SERVE_PORT = """
import http.server, sys
httpd = http.server.ThreadingHTTPServer(
    ("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
print("listening", flush=True)
httpd.serve_forever()
"""


def porthold(*args):
    """Runs porthold and returns its stdout, stripped."""
    done = subprocess.run(
        ["porthold", *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def http_server(tmp_path):
    """The URL of a server started by `porthold run --ephemeral`."""
    (tmp_path / "index.html").write_text("hello from porthold")
    name = f"pytest-{os.getpid()}"
    server = subprocess.Popen(
        ["porthold", "run", "--ephemeral", "--name", name, "--",
         sys.executable, "-c", SERVE_FD3],
        cwd=tmp_path,
    )
    try:
        porthold("wait", "--name", name, "--timeout", "30s")
        yield porthold("url", "--name", name)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_server_answers_on_its_url(http_server):
    with urllib.request.urlopen(http_server + "/index.html") as response:
        assert response.read() == b"hello from porthold"


def test_a_picked_port_is_free_for_a_server_that_binds_it(tmp_path):
    (tmp_path / "index.html").write_text("bound by the server itself")
    # The lease belongs to this test process; it is released below, and
    # would be reclaimable anyway once this process has exited.
    port = porthold("pick", "--owner-pid", str(os.getpid()))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_PORT, port],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout.readline() == "listening\n"
        url = f"http://127.0.0.1:{port}/index.html"
        with urllib.request.urlopen(url) as response:
            assert response.read() == b"bound by the server itself"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        porthold("release", "--port", port)
