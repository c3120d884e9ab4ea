"""nginx (Debian's package) in front of two `qwen3-infer serve` replicas, with the documented
configuration `deploy/nginx.conf`: requests are spread, one conversation stays on one replica,
and a replica killed mid-run costs only its own in-flight requests.

Usage: python nginx_replicas.py QWEN3_INFER_BINARY MODEL_DIR
Everything listens on 127.0.0.1; the nginx prefix is a temporary directory.
"""

import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import Results, Server, free_port, http_json

BINARY, MODEL = sys.argv[1], sys.argv[2]
CONF = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
results = Results("nginx replicas")


def start_nginx(port_a, port_b):
    """The documented configuration with this run's ports, and a private prefix."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx not found: apt-get install nginx-light (or nginx)")
    prefix = tempfile.mkdtemp(prefix="nano-infer-nginx-")
    port = free_port()
    conf = CONF.read_text()
    for old, new in [("127.0.0.1:8081", f"127.0.0.1:{port_a}"), ("127.0.0.1:8082", f"127.0.0.1:{port_b}"),
                     ("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")]:
        assert old in conf, old
        conf = conf.replace(old, new)
    # Private pid, logs and temp paths, so no root-owned default path is needed.
    conf = conf.replace("events {", f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{", 1)
    conf = conf.replace("http {", f"http {{\n    access_log {prefix}/access.log;\n    client_body_temp_path {prefix}/body;\n"
                        f"    proxy_temp_path {prefix}/proxy;\n", 1)
    path = pathlib.Path(prefix) / "nginx.conf"
    path.write_text(conf)
    proc = subprocess.Popen([nginx, "-p", prefix, "-c", str(path), "-g", "daemon off;"])
    deadline = time.time() + 20
    while True:
        try:
            if http_json(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"nginx did not start: {(pathlib.Path(prefix) / 'error.log').read_text()}")
        time.sleep(0.05)


def ask(port, session, max_tokens=2, timeout=60):
    """One chat request through nginx; returns (status, replica name or error text)."""
    status, body = http_json(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"messages": [{"role": "user", "content": f"Hello from {session}"}], "max_tokens": max_tokens,
         "temperature": 0, "ignore_eos": True},
        headers={"X-Session-Id": session},
        timeout=timeout,
    )
    return status, body.get("model") if isinstance(body, dict) else body


def stream(port, session, out):
    """A long streamed answer through nginx; records whether it ended with [DONE]."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps({"messages": [{"role": "user", "content": f"Hi {session}"}], "max_tokens": 3000,
                           "ignore_eos": True, "stream": True})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", "X-Session-Id": session})
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        out[session] = resp.status == 200 and text.rstrip().endswith("data: [DONE]")
    except Exception:  # noqa: BLE001 - a broken stream is the expected failure here
        out[session] = False


with Server(BINARY, MODEL, "--alias", "replica-a") as a, Server(BINARY, MODEL, "--alias", "replica-b") as b:
    proc, port = start_nginx(a.port, b.port)
    try:
        sessions = [f"session-{i}" for i in range(24)]
        home = {}

        def spread():
            for s in sessions:
                status, replica = ask(port, s)
                assert status == 200, (status, replica)
                home[s] = replica
            served = set(home.values())
            assert served == {"replica-a", "replica-b"}, f"one replica took every session: {home}"

        def sticky():
            for s in sessions[:8]:
                for _ in range(3):
                    assert ask(port, s) == (200, home[s]), s

        def killed_replica_costs_only_its_requests():
            on_a = [s for s in sessions if home[s] == "replica-a"][:3]
            on_b = [s for s in sessions if home[s] == "replica-b"][:3]
            done = {}
            threads = [threading.Thread(target=stream, args=(port, s, done)) for s in on_a + on_b]
            for t in threads:
                t.start()
            # Once both replicas are streaming, kill A.
            deadline = time.time() + 30
            while True:
                running = [http_json(r.url + "/metrics")[1] for r in (a, b)]
                if all("nano_infer_running_sequences 0" not in m for m in running):
                    break
                assert time.time() < deadline, "both replicas streaming"
                time.sleep(0.02)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            for t in threads:
                t.join(timeout=300)
            assert all(not done[s] for s in on_a), f"A's streams failed: {done}"
            assert all(done[s] for s in on_b), f"B's streams completed: {done}"
            # A's sessions go on, on B.
            for s in on_a:
                assert ask(port, s) == (200, "replica-b"), s

        results.check("requests are spread over both replicas", spread)
        results.check("a session stays on its replica", sticky)
        results.check("a killed replica costs only its in-flight requests", killed_replica_costs_only_its_requests)
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=20)

results.finish()
