#!/usr/bin/env python3
"""standin_cloud.py: a stand-in for the DigitalOcean (v2) and Hetzner Cloud (v1) APIs.

Tests and the local demo point the provider drivers here instead of at a real cloud. It
speaks the subset Stoke uses, with the providers' published JSON shapes and error words,
and "creates" servers as local sandboxed hosts: with --hosts-dir and --sshd each VM is a
real OpenSSH sshd on 127.0.0.1 with its own host key, folder and authorized keys, and
with --nginx also its own nginx (its own prefix in the VM's folder, serving the sites the
VM's agent writes into ROOT/etc/nginx/sites-enabled) on a port of its own.
Python 3 standard library only. Not a security boundary: listen on 127.0.0.1 only.

Routes (each provider checks its own bearer token, answers in its own error words and
sends its rate-limit headers):

  DigitalOcean              POST/GET /v2/droplets (?tag_name=, ?page=, ?per_page=)
                            GET/DELETE /v2/droplets/{id}, GET /v2/droplets/{id}/actions
                            GET /v2/actions/{id}
                            POST/GET /v2/account/keys, GET/DELETE /v2/account/keys/{id|fp}
  Hetzner Cloud             POST/GET /v1/servers (?label_selector=, ?name=, ?page=, ?per_page=)
                            GET/DELETE /v1/servers/{id}, GET /v1/actions/{id}
                            POST/GET /v1/ssh_keys (?name=, ?fingerprint=)
                            GET/DELETE /v1/ssh_keys/{id}
  control (no token)        POST /_standin/faults   add a fault (see below)
                            DELETE /_standin/faults drop all faults
                            GET /_standin/state     faults left, request log, VMs, keys
                            POST /_standin/reset    drop faults, log, VMs (sshd stopped), keys

A fault is {"provider": "do"|"hetzner" (default any), "path_prefix": "/v2/droplets"
(default "/"), "method": "POST" (default any), "count": N (default 1, -1 = forever), and
what it does: "status": 429|500|503... (answer that error instead of the real answer),
"retry_after": seconds or an HTTP date (sent as Retry-After), "reset_s": S (ratelimit-reset
= now + S, ratelimit-remaining 0), "delay_ms": M (wait before answering), "after": true
(do the real work first, then answer the error: a 5xx after the VM was made),
"pad_bytes": B (a real answer padded with an extra field to at least B bytes)}.
Faults match in the order they were added; each match uses up one of its count.

Extras the real providers do not send (drivers read them only when present):
  - "standin_ssh_port" in a server's JSON and the header X-Standin-SSH-Port on
    GET of that server: the port of the VM's sshd (real clouds use 22);
  - "standin_root" in a server's JSON: the VM's root folder (also exported to SSH
    sessions as STOKE_STANDIN_ROOT);
  - "standin_http_port" in a server's JSON (with --nginx): the port of the VM's nginx,
    where its sites are served (real servers use 80); exported to SSH sessions as
    STOKE_STANDIN_HTTP_PORT, with the nginx prefix as STOKE_STANDIN_NGINX_PREFIX.
A VM's sshd also reads ROOT/etc/ssh/authorized_keys/USER, so keys the agent manages
there (install-agent.sh points the sandboxed agent at it) let people log in.
A VM logs in as the user running the stand-in (root in the test container).

With --vm-command CMD (and --hosts-dir) a VM is instead whatever CMD starts: a real
machine of its own, such as tests/vm/vm.sh's debootstrapped Debian in a network namespace
(tests/e2e_vm_test.sh). CMD is split as a shell would split it and run once per VM, with
STANDIN_VM_FOLDER (the VM's folder, holding authorized_keys: the keys named at creation),
STANDIN_VM_NAME, STANDIN_VM_ID and STANDIN_VM_SEQ (1, 2, ... in creation order) in its
environment. It prints "ipv4 ADDRESS" on stdout once the VM's sshd listens on ADDRESS port
22, and runs as long as the VM does: deleting the VM sends it SIGTERM. Such a VM has none of
the extras above: the API reports ADDRESS as its public IPv4 and nothing else, as a real
provider would, so Stoke provisions it as it would a real server.
"""

import argparse
import base64
import binascii
import ctypes
import hashlib
import ipaddress
import json
import math
import os
import queue
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STANDIN_BODY_MAX = 1024 * 1024
STANDIN_LOG_MAX = 1000
STANDIN_SSHD_START_S = 15.0
STANDIN_NGINX_START_S = 15.0
STANDIN_VM_BOOT_S = 120.0  # --vm-command: until it prints the VM's address
STANDIN_VM_STOP_S = 30.0  # --vm-command: after SIGTERM, before SIGKILL

STANDIN_DO_LIMIT = 5000
STANDIN_HZ_LIMIT = 3600

STANDIN_DO_SIZES = {
    "s-1vcpu-1gb": (1024, 1, 25),
    "s-1vcpu-2gb": (2048, 1, 50),
    "s-2vcpu-2gb": (2048, 2, 60),
    "s-2vcpu-4gb": (4096, 2, 80),
}
STANDIN_DO_REGIONS = {
    "nyc1": "New York 1", "nyc3": "New York 3", "ams3": "Amsterdam 3",
    "fra1": "Frankfurt 1", "lon1": "London 1", "sfo3": "San Francisco 3",
}
STANDIN_HZ_LOCATIONS = {
    "fsn1": ("Falkenstein DC Park 1", "Falkenstein", "DE", 50.47612, 12.370071, "fsn1-dc14"),
    "nbg1": ("Nuremberg DC Park 1", "Nuremberg", "DE", 49.452102, 11.076665, "nbg1-dc3"),
    "hel1": ("Helsinki DC Park 1", "Helsinki", "FI", 60.169855, 24.938379, "hel1-dc2"),
}
STANDIN_HZ_TYPES = {"cx22": (2, 4, 40), "cpx11": (2, 2, 40), "cx32": (4, 8, 80)}

STANDIN_DO_HOSTNAME = re.compile(r"^[a-zA-Z0-9.-]+$")
STANDIN_DO_TAG = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
STANDIN_HZ_NAME = re.compile(
    r"^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$")
STANDIN_HZ_LABEL_KEY = re.compile(
    r"^([a-z0-9A-Z]([-.a-zA-Z0-9]*[a-zA-Z0-9])?/)?[a-z0-9A-Z]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")
STANDIN_HZ_LABEL_VALUE = re.compile(r"^([a-z0-9A-Z]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)?$")
STANDIN_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                     "ecdsa-sha2-nistp521", "ssh-dss", "sk-ssh-ed25519@openssh.com",
                     "sk-ecdsa-sha2-nistp256@openssh.com")


def standin_iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def standin_log(msg):
    sys.stderr.write("standin_cloud: %s\n" % msg)
    sys.stderr.flush()


def standin_parse_pubkey(text):
    """Returns (type, blob bytes, "type base64") or None when it is not an OpenSSH public key."""
    if not isinstance(text, str):
        return None
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] not in STANDIN_KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    n = int.from_bytes(blob[:4], "big")
    if blob[4:4 + n] != parts[0].encode():
        return None
    return parts[0], blob, parts[0] + " " + parts[1]


def standin_md5_fp(blob):
    d = hashlib.md5(blob).hexdigest()
    return ":".join(d[i:i + 2] for i in range(0, len(d), 2))


def standin_free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def standin_port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def standin_pdeathsig(parent):
    """In the child before exec: die with the stand-in even when it is killed with SIGKILL.
    Signals blocked by whoever started the stand-in are unblocked first: a blocked SIGTERM
    would be held, not delivered."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the stand-in died before prctl
        os._exit(1)


def standin_kill_under(folder):
    """A deleted VM is switched off: processes whose program lies in its folder (the agent
    install-agent.sh started there, with setsid) get SIGTERM, then SIGKILL after 5 s."""
    prefix = os.path.realpath(folder) + "/"

    def victims():
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                exe = os.readlink("/proc/%s/exe" % d)
            except OSError:
                continue
            if exe.startswith(prefix):
                pids.append(int(d))
        return pids

    deadline = time.monotonic() + 5.0
    sig = signal.SIGTERM
    while True:
        pids = victims()
        if not pids or time.monotonic() > deadline + 5.0:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.05)


class StandinError(Exception):
    """An API error: HTTP status, the provider's error code and message."""

    def __init__(self, status, code, message, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class StandinVM:
    """One server: its API view, and (with --sshd) a local sshd in its own folder."""

    def __init__(self, provider, vid, name, boot_at):
        self.provider = provider
        self.id = vid
        self.name = name
        self.boot_at = boot_at  # monotonic time it may become active
        self.created = time.time()
        self.region = ""
        self.size = ""
        self.image = ""
        self.tags = []  # DO
        self.labels = {}  # Hetzner
        self.pubkeys = []
        self.user_data = None
        self.folder = None
        self.ssh_port = None
        self.proc = None
        self.http_port = None  # the VM's nginx (--nginx)
        self.nginx = None
        self.ipv4 = None  # --vm-command: the address it reported
        self.seq = 0  # --vm-command: 1, 2, ... in creation order
        self.ready = False  # sshd listening (or no sshd wanted)
        self.failed = None  # why the sshd could not start
        self.deleted = False
        self.action_ids = []


class StandinCloud:
    """All state, behind one lock. VM sshds are spawned by one long-lived thread."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.tokens = {"do": args.do_token, "hetzner": args.hetzner_token}
        self.next_id = {"do_vm": 3164444, "do_key": 512189, "do_action": 7515,
                        "hz_vm": 42, "hz_key": 2323, "hz_action": 13}
        self.vms = {"do": {}, "hetzner": {}}
        self.keys = {"do": {}, "hetzner": {}}
        self.actions = {"do": {}, "hetzner": {}}
        self.faults = []
        self.log = []
        self.rate = {"do": [], "hetzner": []}  # request times in the last hour
        self.vm_seq = 0  # --vm-command VMs made so far
        self.tasks = queue.Queue()
        self.worker = threading.Thread(target=self.worker_main, name="standin-vms", daemon=True)
        self.worker.start()

    def new_id(self, kind):
        v = self.next_id[kind]
        self.next_id[kind] = v + 1
        return v

    # ---- faults, log, rate limits -------------------------------------------------------

    def fault_take(self, provider, method, path):
        with self.lock:
            for f in self.faults:
                if f.get("provider") not in (None, provider):
                    continue
                if f.get("method") not in (None, method):
                    continue
                if not path.startswith(f.get("path_prefix", "/")):
                    continue
                if f["count"] == 0:
                    continue
                if f["count"] > 0:
                    f["count"] -= 1
                f["hits"] += 1
                return dict(f)
        return None

    def fault_add(self, body):
        if not isinstance(body, dict):
            raise StandinError(400, "bad_request", "a fault is a JSON object")
        f = {"provider": body.get("provider"), "method": body.get("method"),
             "path_prefix": body.get("path_prefix", "/"), "count": int(body.get("count", 1)),
             "hits": 0}
        if f["provider"] not in (None, "do", "hetzner"):
            raise StandinError(400, "bad_request", "provider is do or hetzner")
        for k in ("status", "delay_ms", "reset_s", "pad_bytes"):
            if body.get(k) is not None:
                f[k] = int(body[k])
        if body.get("retry_after") is not None:
            f["retry_after"] = body["retry_after"]
        f["after"] = bool(body.get("after", False))
        with self.lock:
            self.faults.append(f)
        return f

    def log_request(self, provider, method, path, status):
        with self.lock:
            self.log.append({"t": time.time(), "provider": provider, "method": method,
                             "path": path, "status": status})
            del self.log[:-STANDIN_LOG_MAX]

    def rate_headers(self, provider, fault):
        """The provider's ratelimit-* headers, counting this request."""
        now = time.time()
        limit = STANDIN_DO_LIMIT if provider == "do" else STANDIN_HZ_LIMIT
        with self.lock:
            times = self.rate[provider]
            times.append(now)
            while times and times[0] < now - 3600:
                times.pop(0)
            used = len(times)
            oldest = times[0]
        remaining = max(0, limit - used)
        if provider == "do":
            reset = int(oldest + 3600)  # when the oldest request leaves the window
        else:
            reset = int(now) + (limit - remaining)  # full again at 1 request per second
        h = []
        if fault is not None and fault.get("reset_s") is not None:
            remaining = 0
            reset = int(math.ceil(now + fault["reset_s"]))
        if fault is not None and fault.get("status") == 429 and fault.get("reset_s") is None:
            remaining = 0
        h.append(("ratelimit-limit", str(limit)))
        h.append(("ratelimit-remaining", str(remaining)))
        h.append(("ratelimit-reset", str(reset)))
        if fault is not None and fault.get("retry_after") is not None:
            ra = fault["retry_after"]
            if isinstance(ra, (int, float)) and not isinstance(ra, bool):
                h.append(("retry-after", str(int(ra))))
            elif ra == "date":
                h.append(("retry-after", formatdate(now + 1, usegmt=True)))
            else:
                h.append(("retry-after", str(ra)))
        return h

    # ---- VMs: sshd lifecycle --------------------------------------------------------------

    def worker_main(self):
        # sshd children get PR_SET_PDEATHSIG, which fires when the *thread* that forked them
        # ends; this thread lives as long as the process, so every spawn happens here.
        while True:
            vm = self.tasks.get()
            try:
                self.vm_start(vm)
            except Exception as e:  # keep the worker alive whatever happens
                vm.failed = "start: %s" % e
                standin_log("%s %s: %s" % (vm.provider, vm.id, vm.failed))

    def vm_start(self, vm):
        a = self.args
        if vm.deleted:  # deleted before its turn came
            if vm.folder is not None:
                shutil.rmtree(vm.folder, ignore_errors=True)
            return
        if vm.folder is not None:
            os.makedirs(os.path.join(vm.folder, "root"), mode=0o700, exist_ok=True)
            os.chmod(vm.folder, 0o700)
            with open(os.path.join(vm.folder, "authorized_keys"), "w") as fh:
                for k in vm.pubkeys:
                    fh.write(k + "\n")
            os.chmod(os.path.join(vm.folder, "authorized_keys"), 0o600)
            if vm.user_data is not None:
                with open(os.path.join(vm.folder, "user-data"), "w") as fh:
                    fh.write(vm.user_data)
        if a.vm_command:
            self.vm_boot(vm)
            return
        if not a.sshd:
            vm.ready = True
            return
        if a.nginx and not self.nginx_start(vm):
            return
        # People's keys, as the sandboxed agent manages them (see AuthorizedKeysFile).
        os.makedirs(os.path.join(vm.folder, "root", "etc", "ssh", "authorized_keys"),
                    mode=0o755, exist_ok=True)
        hostkey = os.path.join(vm.folder, "ssh_host_ed25519_key")
        subprocess.run([a.ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                        "standin-%s-%s" % (vm.provider, vm.id), "-f", hostkey],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError:
            pass  # not root: sshd runs without privilege separation then
        logpath = os.path.join(vm.folder, "sshd.log")
        mypid = os.getpid()
        for _ in range(3):
            port = standin_free_port()
            conf = os.path.join(vm.folder, "sshd_config")
            with open(conf, "w") as fh:
                fh.write("# sshd of stand-in VM %s %s\n" % (vm.provider, vm.id))
                fh.write("ListenAddress 127.0.0.1\nPort %d\n" % port)
                fh.write("HostKey %s\n" % hostkey)
                fh.write("PidFile %s\n" % os.path.join(vm.folder, "sshd.pid"))
                fh.write("AuthorizedKeysFile %s %s/etc/ssh/authorized_keys/%%u\n"
                         % (os.path.join(vm.folder, "authorized_keys"),
                            os.path.join(vm.folder, "root")))
                fh.write("UsePAM no\nStrictModes no\nPubkeyAuthentication yes\n"
                         "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                         "PermitRootLogin prohibit-password\n"
                         "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n")
                # PYENV_REHASH_TIMEOUT: on the test machines root's ~/.bashrc runs `pyenv
                # init`, whose rehash waits up to 60 s for a lock that a killed session can
                # leave behind (the chaos tests kill controllers mid-command): then every
                # command over SSH took a minute. One second bounds it.
                env = "PYENV_REHASH_TIMEOUT=1 STOKE_STANDIN_ROOT=%s" % os.path.join(
                    vm.folder, "root")
                if vm.http_port is not None:
                    env += " STOKE_STANDIN_HTTP_PORT=%d STOKE_STANDIN_NGINX_PREFIX=%s/" % (
                        vm.http_port, os.path.join(vm.folder, "nginx"))
                fh.write("SetEnv %s\n" % env)
            with open(logpath, "ab") as log:
                proc = subprocess.Popen([a.sshd_bin, "-D", "-e", "-f", conf],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        preexec_fn=lambda: standin_pdeathsig(mypid),
                                        close_fds=True)
            deadline = time.monotonic() + STANDIN_SSHD_START_S
            up = False
            while time.monotonic() < deadline and proc.poll() is None:
                if standin_port_open(port):
                    up = True
                    break
                time.sleep(0.02)
            if up:
                break
            self.proc_stop(proc)  # exited (port taken?) or never listened: try another port
            proc = None
        if proc is None:
            vm.failed = "sshd did not start, see %s" % logpath
            standin_log("%s %s: %s" % (vm.provider, vm.id, vm.failed))
            self.nginx_stop(vm)
            return
        with self.lock:
            if not vm.deleted:
                vm.proc = proc
                vm.ssh_port = port
                vm.ready = True
                proc = None
        if proc is not None:  # deleted while it was starting
            self.proc_stop(proc)
            self.nginx_stop(vm)
            shutil.rmtree(vm.folder, ignore_errors=True)
            return
        standin_log("%s %s: sshd pid %d on 127.0.0.1:%d" % (vm.provider, vm.id, vm.proc.pid,
                                                           port))

    def vm_boot(self, vm):
        """--vm-command: starts the command for this VM and waits until it reports the VM's
        address. Sets vm.proc, vm.ipv4 and vm.ready, or vm.failed."""
        a = self.args
        with self.lock:
            self.vm_seq += 1
            vm.seq = self.vm_seq
        env = dict(os.environ, STANDIN_VM_FOLDER=vm.folder, STANDIN_VM_NAME=vm.name,
                   STANDIN_VM_ID=str(vm.id), STANDIN_VM_SEQ=str(vm.seq))
        logpath = os.path.join(vm.folder, "vm-command.log")
        mypid = os.getpid()
        with open(logpath, "ab") as log:
            proc = subprocess.Popen(shlex.split(a.vm_command), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log, env=env,
                                    preexec_fn=lambda: standin_pdeathsig(mypid),
                                    close_fds=True)
        ip, buf = None, b""
        deadline = time.monotonic() + STANDIN_VM_BOOT_S
        while ip is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and ip is None:
                line, buf = buf.split(b"\n", 1)
                words = line.decode("utf-8", "replace").split()
                if len(words) == 2 and words[0] == "ipv4":
                    try:
                        ip = str(ipaddress.IPv4Address(words[1]))
                    except ValueError:
                        pass
        proc.stdout.close()
        if ip is None:
            self.proc_stop(proc, STANDIN_VM_STOP_S)
            vm.failed = "the VM did not boot, see %s" % logpath
            standin_log("%s %s: %s" % (vm.provider, vm.id, vm.failed))
            return
        with self.lock:
            if not vm.deleted:
                vm.proc, vm.ipv4, vm.ready = proc, ip, True
                proc = None
        if proc is not None:  # deleted while it was booting
            self.proc_stop(proc, STANDIN_VM_STOP_S)
            shutil.rmtree(vm.folder, ignore_errors=True)
            return
        standin_log("%s %s: VM %s (pid %d) up at %s" % (vm.provider, vm.id, vm.name,
                                                        vm.proc.pid, ip))

    def nginx_start(self, vm):
        """The VM's own nginx: prefix VM/nginx/, a default server answering 404, the sites
        of ROOT/etc/nginx/sites-enabled. Sets vm.nginx and vm.http_port; False (and
        vm.failed) when it could not start."""
        a = self.args
        prefix = os.path.join(vm.folder, "nginx")
        root = os.path.join(vm.folder, "root")
        for d in ("conf", "logs"):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        for d in ("sites-available", "sites-enabled"):
            os.makedirs(os.path.join(root, "etc", "nginx", d), exist_ok=True)
        logpath = os.path.join(prefix, "logs", "stdout.log")
        mypid = os.getpid()
        for _ in range(3):
            port = standin_free_port()
            with open(os.path.join(prefix, "conf", "nginx.conf"), "w") as fh:
                fh.write("# nginx of stand-in VM %s %s\n" % (vm.provider, vm.id))
                fh.write("user root;\nworker_processes 1;\n")
                fh.write("error_log %s/logs/error.log;\n" % prefix)
                fh.write("events { worker_connections 64; }\nhttp {\n")
                fh.write("\taccess_log %s/logs/access.log;\n" % prefix)
                for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                    fh.write("\t%s_temp_path %s/tmp_%s;\n" % (t, prefix, t))
                # Sites the agent writes say "listen PORT" (every address): the
                # default server must listen the same way to share the socket.
                fh.write("\tserver { listen %d default_server; return 404; }\n" % port)
                fh.write("\tinclude %s/etc/nginx/sites-enabled/*;\n}\n" % root)
            with open(logpath, "ab") as log:
                proc = subprocess.Popen(
                    [a.nginx_bin, "-p", prefix + "/", "-c", "conf/nginx.conf",
                     "-e", "logs/error.log",
                     "-g", "daemon off; pid %s/nginx.pid;" % prefix],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    preexec_fn=lambda: standin_pdeathsig(mypid), close_fds=True)
            deadline = time.monotonic() + STANDIN_NGINX_START_S
            while time.monotonic() < deadline and proc.poll() is None:
                if standin_port_open(port):
                    with self.lock:
                        vm.nginx, vm.http_port = proc, port
                    standin_log("%s %s: nginx pid %d on 127.0.0.1:%d" % (
                        vm.provider, vm.id, proc.pid, port))
                    return True
                time.sleep(0.02)
            self.proc_stop(proc)
        vm.failed = "nginx did not start, see %s" % logpath
        standin_log("%s %s: %s" % (vm.provider, vm.id, vm.failed))
        return False

    def nginx_stop(self, vm):
        with self.lock:
            proc, vm.nginx = vm.nginx, None
        self.proc_stop(proc)

    @staticmethod
    def proc_stop(proc, timeout=5):
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.wait()
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def vm_new(self, provider, name):
        kind = "do_vm" if provider == "do" else "hz_vm"
        vm = StandinVM(provider, self.new_id(kind), name,
                       time.monotonic() + self.args.boot_ms / 1000.0)
        if self.args.hosts_dir:
            vm.folder = os.path.join(self.args.hosts_dir, "%s-%d" % (provider, vm.id))
        return vm

    def vm_launch(self, vm):
        if vm.folder is not None:
            os.makedirs(vm.folder, mode=0o700, exist_ok=True)
        self.tasks.put(vm)

    def vm_delete(self, provider, vid):
        """Removes the VM from the API at once, then stops its sshd and removes its folder."""
        with self.lock:
            vm = self.vms[provider].pop(vid, None)
            if vm is None:
                return False
            vm.deleted = True
            proc, vm.proc = vm.proc, None
        self.proc_stop(proc, STANDIN_VM_STOP_S if self.args.vm_command else 5)
        self.nginx_stop(vm)
        if vm.folder is not None:
            standin_kill_under(vm.folder)
        if vm.folder is not None and (proc is not None or vm.ready or vm.failed):
            shutil.rmtree(vm.folder, ignore_errors=True)
        standin_log("%s %s: deleted" % (provider, vid))
        return True

    def vm_phase(self, vm):
        """'new' (being made or booting), 'active', or 'off' (its sshd could not start)."""
        if vm.failed:
            return "off"
        if vm.ready and time.monotonic() >= vm.boot_at:
            return "active"
        return "new"

    def shutdown(self):
        with self.lock:
            ids = [(p, i) for p in self.vms for i in list(self.vms[p])]
        for p, i in ids:
            self.vm_delete(p, i)

    def reset(self):
        self.shutdown()
        with self.lock:
            self.faults = []
            self.log = []
            for p in ("do", "hetzner"):
                self.keys[p].clear()
                self.actions[p].clear()
                self.rate[p] = []

    def state(self):
        with self.lock:
            out = {"faults": [dict(f) for f in self.faults], "requests": list(self.log)}
            for p in ("do", "hetzner"):
                out[p] = {
                    "servers": [{"id": vm.id, "name": vm.name, "status": self.vm_phase(vm),
                                 "ssh_port": vm.ssh_port,
                                 "sshd_pid": vm.proc.pid if vm.proc else None,
                                 "http_port": vm.http_port,
                                 "nginx_pid": vm.nginx.pid if vm.nginx else None,
                                 "ipv4": vm.ipv4,
                                 "vm_pid": vm.proc.pid if vm.proc and vm.ipv4 else None,
                                 "folder": vm.folder, "tags": vm.tags, "labels": vm.labels}
                                for vm in self.vms[p].values()],
                    "keys": [dict(k) for k in self.keys[p].values()],
                }
            return out

    # ---- pagination ---------------------------------------------------------------------

    def page_args(self, q, default, maximum):
        maximum = min(maximum, self.args.page_max) if self.args.page_max else maximum
        try:
            page = max(1, int(q.get("page", ["1"])[0]))
            per_page = int(q.get("per_page", [str(default)])[0])
        except ValueError:
            raise StandinError(400, "invalid_input", "page and per_page must be numbers")
        per_page = max(1, min(per_page, maximum))
        return page, per_page


def standin_do_page_links(base, path, q, page, per_page, total):
    last = max(1, (total + per_page - 1) // per_page)
    if last == 1:
        return {}

    def url(p):
        qq = {k: v[0] for k, v in q.items() if k not in ("page", "per_page")}
        qq["page"] = str(p)
        qq["per_page"] = str(per_page)
        return base + path + "?" + urllib.parse.urlencode(qq)

    pages = {}
    if page > 1:
        pages["first"] = url(1)
        pages["prev"] = url(page - 1)
    if page < last:
        pages["next"] = url(page + 1)
        pages["last"] = url(last)
    return {"pages": pages}


def standin_hz_pagination(page, per_page, total):
    last = max(1, (total + per_page - 1) // per_page)
    return {"page": page, "per_page": per_page,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last else None,
            "last_page": last, "total_entries": total}


# ---- DigitalOcean --------------------------------------------------------------------------

def standin_do_region(slug):
    return {"name": STANDIN_DO_REGIONS.get(slug, slug), "slug": slug,
            "features": ["private_networking", "backups", "ipv6", "metadata", "install_agent",
                         "storage", "image_transfer"],
            "available": True, "sizes": sorted(STANDIN_DO_SIZES)}


def standin_do_droplet(cloud, vm):
    mem, vcpus, disk = STANDIN_DO_SIZES.get(vm.size, (1024, 1, 25))
    status = cloud.vm_phase(vm)
    v4 = []
    if status != "new":
        if vm.ipv4 is not None:
            v4 = [{"ip_address": vm.ipv4, "netmask": "255.255.255.0",
                   "gateway": vm.ipv4.rsplit(".", 1)[0] + ".1", "type": "public"}]
        else:
            v4 = [{"ip_address": "127.0.0.1", "netmask": "255.0.0.0", "gateway": "127.0.0.1",
                   "type": "public"}]
    d = {
        "id": vm.id, "name": vm.name, "memory": mem, "vcpus": vcpus, "disk": disk,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
        "locked": False, "status": status, "kernel": None, "created_at": standin_iso(vm.created),
        "features": ["private_networking"], "backup_ids": [], "next_backup_window": None,
        "snapshot_ids": [],
        "image": {"id": 63663980, "name": vm.image, "distribution": "Debian", "slug": vm.image,
                  "public": True, "regions": sorted(STANDIN_DO_REGIONS),
                  "created_at": "2020-05-15T05:47:50Z", "type": "snapshot", "min_disk_size": 20,
                  "size_gigabytes": 2.36, "description": "", "tags": [], "status": "available",
                  "error_message": ""},
        "volume_ids": [],
        "size": {"slug": vm.size, "memory": mem, "vcpus": vcpus, "disk": disk, "transfer": 1.0,
                 "price_monthly": 6.0, "price_hourly": 0.00893,
                 "regions": sorted(STANDIN_DO_REGIONS),
                 "available": True, "description": "Basic"},
        "size_slug": vm.size,
        "networks": {"v4": v4, "v6": []},
        "region": standin_do_region(vm.region),
        "tags": list(vm.tags),
        "vpc_uuid": "760e09ef-dc84-11e8-981e-3cfdfeaae000",
    }
    if vm.ssh_port is not None:
        d["standin_ssh_port"] = vm.ssh_port
    if vm.http_port is not None:
        d["standin_http_port"] = vm.http_port
    if vm.folder is not None and not cloud.args.vm_command:
        d["standin_root"] = os.path.join(vm.folder, "root")
    return d


def standin_do_action(cloud, a):
    vm = cloud.vms["do"].get(a["resource_id"])
    done = a.get("done_at")
    if done is None and vm is not None and cloud.vm_phase(vm) != "new":
        done = a["done_at"] = time.time()
    if done is None and vm is None:
        status = "errored"
    else:
        status = "completed" if done is not None else "in-progress"
    return {"id": a["id"], "status": status, "type": a["type"],
            "started_at": standin_iso(a["started"]),
            "completed_at": standin_iso(done) if done is not None else None,
            "resource_id": a["resource_id"], "resource_type": "droplet",
            "region": standin_do_region(a["region"]), "region_slug": a["region"]}


def standin_do_key_json(k):
    return {"id": k["id"], "fingerprint": k["fingerprint"], "public_key": k["public_key"],
            "name": k["name"]}


def standin_do_find_key(cloud, ref):
    keys = cloud.keys["do"]
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return keys.get(int(ref))
    if isinstance(ref, str):
        for k in keys.values():
            if k["fingerprint"] == ref:
                return k
    return None


def standin_do_route(h, cloud, method, path, q, body):
    """Returns (status, json or None, extra headers)."""
    parts = [p for p in path.split("/") if p][1:]  # drop "v2"
    invalid = "request payload validation failed"
    if parts == ["droplets"] and method == "POST":
        if not isinstance(body, dict):
            raise StandinError(400, "bad_request", "error parsing request body")
        if "names" in body:
            raise StandinError(422, "unprocessable_entity",
                               "the stand-in makes one droplet per request (use name)")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise StandinError(422, "unprocessable_entity", "Name is required")
        if not STANDIN_DO_HOSTNAME.match(name):
            raise StandinError(422, "unprocessable_entity",
                               "Only valid hostname characters are allowed. "
                               "(a-z, A-Z, 0-9, . and -)")
        for f in ("region", "size", "image"):
            if not isinstance(body.get(f), (str, int)) or body.get(f) == "":
                raise StandinError(422, "unprocessable_entity", invalid)
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and STANDIN_DO_TAG.match(t)
                                                 for t in tags):
            raise StandinError(422, "unprocessable_entity",
                               "tag names must contain only letters, numbers, colons, "
                               "dashes and underscores")
        user_data = body.get("user_data")
        if user_data is not None and not isinstance(user_data, str):
            raise StandinError(422, "unprocessable_entity", invalid)
        refs = body.get("ssh_keys") or []
        if not isinstance(refs, list):
            raise StandinError(422, "unprocessable_entity", invalid)
        with cloud.lock:
            found = [standin_do_find_key(cloud, r) for r in refs]
            if any(k is None for k in found):
                raise StandinError(422, "unprocessable_entity",
                                   "You specified invalid ssh key ids for Droplet creation.")
            vm = cloud.vm_new("do", name)
            vm.region, vm.size, vm.image = body["region"], body["size"], str(body["image"])
            vm.tags = list(dict.fromkeys(tags))
            vm.pubkeys = [k["public_key"] for k in found]
            vm.user_data = user_data
            aid = cloud.new_id("do_action")
            cloud.actions["do"][aid] = {"id": aid, "type": "create", "resource_id": vm.id,
                                        "started": time.time(), "region": vm.region}
            vm.action_ids.append(aid)
            cloud.vms["do"][vm.id] = vm
            d = standin_do_droplet(cloud, vm)
        cloud.vm_launch(vm)
        base = h.base_url()
        return 202, {"droplet": d, "links": {"actions": [
            {"id": aid, "rel": "create", "href": "%s/v2/actions/%d" % (base, aid)}]}}, []
    if parts == ["droplets"] and method == "GET":
        page, per_page = cloud.page_args(q, 20, 200)
        tag = q.get("tag_name", [None])[0]
        name = q.get("name", [None])[0]
        with cloud.lock:
            vms = sorted(cloud.vms["do"].values(), key=lambda v: v.id)
            if tag is not None:
                vms = [v for v in vms if tag in v.tags]
            if name is not None:
                vms = [v for v in vms if v.name == name]
            chunk = vms[(page - 1) * per_page:page * per_page]
            items = [standin_do_droplet(cloud, v) for v in chunk]
        return 200, {"droplets": items,
                     "links": standin_do_page_links(h.base_url(), path, q, page, per_page,
                                                    len(vms)),
                     "meta": {"total": len(vms)}}, []
    if len(parts) >= 2 and parts[0] == "droplets" and parts[1].isdigit():
        vid = int(parts[1])
        if len(parts) == 2 and method == "GET":
            with cloud.lock:
                vm = cloud.vms["do"].get(vid)
                if vm is None:
                    raise StandinError(404, "not_found",
                                       "The resource you requested could not be found.")
                d = standin_do_droplet(cloud, vm)
            hdrs = [("X-Standin-SSH-Port", str(vm.ssh_port))] if vm.ssh_port else []
            return 200, {"droplet": d}, hdrs
        if len(parts) == 2 and method == "DELETE":
            if not cloud.vm_delete("do", vid):
                raise StandinError(404, "not_found",
                                   "The resource you requested could not be found.")
            return 204, None, [("content-type", "application/json; charset=utf-8")]
        if len(parts) == 3 and parts[2] == "actions" and method == "GET":
            page, per_page = cloud.page_args(q, 20, 200)
            with cloud.lock:
                if vid not in cloud.vms["do"]:
                    raise StandinError(404, "not_found",
                                       "The resource you requested could not be found.")
                acts = [standin_do_action(cloud, a) for a in cloud.actions["do"].values()
                        if a["resource_id"] == vid]
            chunk = acts[(page - 1) * per_page:page * per_page]
            return 200, {"actions": chunk,
                         "links": standin_do_page_links(h.base_url(), path, q, page, per_page,
                                                        len(acts)),
                         "meta": {"total": len(acts)}}, []
    if len(parts) == 2 and parts[0] == "actions" and parts[1].isdigit() and method == "GET":
        with cloud.lock:
            a = cloud.actions["do"].get(int(parts[1]))
            if a is None:
                raise StandinError(404, "not_found",
                                   "The resource you requested could not be found.")
            return 200, {"action": standin_do_action(cloud, a)}, []
    if parts == ["account", "keys"] and method == "POST":
        if not isinstance(body, dict):
            raise StandinError(400, "bad_request", "error parsing request body")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise StandinError(422, "unprocessable_entity", "Name can't be blank")
        parsed = standin_parse_pubkey(body.get("public_key"))
        if parsed is None:
            raise StandinError(422, "unprocessable_entity",
                               "Key invalid, key should be of the format `type key [comment]`")
        fp = standin_md5_fp(parsed[1])
        with cloud.lock:
            if any(k["fingerprint"] == fp for k in cloud.keys["do"].values()):
                raise StandinError(422, "unprocessable_entity",
                                   "SSH Key is already in use on your account")
            kid = cloud.new_id("do_key")
            k = {"id": kid, "fingerprint": fp, "public_key": body["public_key"].strip(),
                 "name": name}
            cloud.keys["do"][kid] = k
            return 201, {"ssh_key": standin_do_key_json(k)}, []
    if parts == ["account", "keys"] and method == "GET":
        page, per_page = cloud.page_args(q, 20, 200)
        with cloud.lock:
            keys = sorted(cloud.keys["do"].values(), key=lambda k: k["id"])
            chunk = [standin_do_key_json(k) for k in keys[(page - 1) * per_page:page * per_page]]
        return 200, {"ssh_keys": chunk,
                     "links": standin_do_page_links(h.base_url(), path, q, page, per_page,
                                                    len(keys)),
                     "meta": {"total": len(keys)}}, []
    if len(parts) == 3 and parts[:2] == ["account", "keys"] and method in ("GET", "DELETE"):
        with cloud.lock:
            k = standin_do_find_key(cloud, parts[2])
            if k is None:
                raise StandinError(404, "not_found",
                                   "The resource you requested could not be found.")
            if method == "GET":
                return 200, {"ssh_key": standin_do_key_json(k)}, []
            del cloud.keys["do"][k["id"]]
        return 204, None, [("content-type", "application/json; charset=utf-8")]
    raise StandinError(404, "not_found", "The resource you requested could not be found.")


# ---- Hetzner Cloud -------------------------------------------------------------------------

def standin_hz_location(name):
    desc, city, country, lat, lon, _ = STANDIN_HZ_LOCATIONS.get(
        name, STANDIN_HZ_LOCATIONS["fsn1"])
    return {"id": sorted(STANDIN_HZ_LOCATIONS).index(name) + 1
            if name in STANDIN_HZ_LOCATIONS else 1,
            "name": name, "description": desc, "city": city, "country": country,
            "latitude": lat, "longitude": lon, "network_zone": "eu-central"}


def standin_hz_server(cloud, vm):
    phase = cloud.vm_phase(vm)
    status = {"new": "initializing", "active": "running", "off": "off"}[phase]
    cores, mem, disk = STANDIN_HZ_TYPES.get(vm.size, (2, 4, 40))
    loc = standin_hz_location(vm.region)
    s = {
        "id": vm.id, "name": vm.name, "status": status, "created": standin_iso(vm.created),
        "public_net": {
            "ipv4": {"id": 110630000 + vm.id, "ip": vm.ipv4 or "127.0.0.1", "blocked": False,
                     "dns_ptr": "static.%s.clients.your-server.de" % vm.ipv4
                     if vm.ipv4 else "localhost"},
            "ipv6": None, "floating_ips": [], "firewalls": []},
        "private_net": [],
        "server_type": {"id": 104, "name": vm.size, "description": vm.size.upper(),
                        "cores": cores, "memory": mem, "disk": disk, "deprecated": False,
                        "prices": [], "storage_type": "local", "cpu_type": "shared",
                        "architecture": "x86"},
        "datacenter": {"id": loc["id"], "name": STANDIN_HZ_LOCATIONS.get(
            vm.region, STANDIN_HZ_LOCATIONS["fsn1"])[5], "description": loc["description"],
            "location": loc},
        "location": loc,
        "image": {"id": 310554929, "type": "system", "status": "available", "name": vm.image,
                  "description": vm.image, "image_size": None, "disk_size": 5,
                  "created": "2025-08-18T06:15:25Z", "created_from": None, "bound_to": None,
                  "os_flavor": "debian", "os_version": None, "rapid_deploy": True,
                  "protection": {"delete": False}, "deprecated": None, "labels": {},
                  "deleted": None, "architecture": "x86"},
        "iso": None, "rescue_enabled": False, "locked": False, "backup_window": None,
        "outgoing_traffic": 0, "ingoing_traffic": 0, "included_traffic": 21990232555520,
        "protection": {"delete": False, "rebuild": False},
        "labels": dict(vm.labels), "volumes": [], "load_balancers": [],
        "primary_disk_size": disk, "placement_group": None,
    }
    if vm.ssh_port is not None:
        s["standin_ssh_port"] = vm.ssh_port
    if vm.http_port is not None:
        s["standin_http_port"] = vm.http_port
    if vm.folder is not None and not cloud.args.vm_command:
        s["standin_root"] = os.path.join(vm.folder, "root")
    return s


def standin_hz_action(cloud, a):
    vm = cloud.vms["hetzner"].get(a["resource_id"])
    done = a.get("done_at")
    if done is None and vm is not None and cloud.vm_phase(vm) == "active":
        done = a["done_at"] = time.time()
    if done is None and vm is not None and cloud.vm_phase(vm) == "off":
        done = a["done_at"] = time.time()
        a["error"] = {"code": "action_failed", "message": "Action failed"}
    status = "running"
    if done is not None:
        status = "error" if a.get("error") else "success"
    return {"id": a["id"], "command": a["command"], "status": status,
            "progress": 100 if done is not None else 0, "started": standin_iso(a["started"]),
            "finished": standin_iso(done) if done is not None else None,
            "resources": [{"id": a["resource_id"], "type": "server"}],
            "error": a.get("error")}


def standin_hz_key_json(k):
    return {"id": k["id"], "name": k["name"], "fingerprint": k["fingerprint"],
            "public_key": k["public_key"], "labels": dict(k["labels"]),
            "created": standin_iso(k["created"])}


def standin_hz_selector(selector):
    """A label selector ("k=v,k2!=v2,k3,!k4") as a predicate over a labels dict."""
    tests = []
    for term in [t.strip() for t in selector.split(",") if t.strip()]:
        if "!=" in term:
            k, v = term.split("!=", 1)
            tests.append(lambda L, k=k.strip(), v=v.strip(): L.get(k) != v)
        elif "==" in term:
            k, v = term.split("==", 1)
            tests.append(lambda L, k=k.strip(), v=v.strip(): L.get(k) == v)
        elif "=" in term:
            k, v = term.split("=", 1)
            tests.append(lambda L, k=k.strip(), v=v.strip(): L.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda L, k=term[1:].strip(): k not in L)
        else:
            tests.append(lambda L, k=term: k in L)
    return lambda labels: all(t(labels) for t in tests)


def standin_hz_labels(labels):
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise StandinError(400, "invalid_input", "invalid input in field 'labels'",
                           {"fields": [{"name": "labels", "messages": ["must be an object"]}]})
    for k, v in labels.items():
        if not STANDIN_HZ_LABEL_KEY.match(k) or not isinstance(v, str) or \
                not STANDIN_HZ_LABEL_VALUE.match(v):
            raise StandinError(400, "invalid_input", "invalid input in field 'labels'",
                               {"fields": [{"name": "labels",
                                            "messages": ["label %r is invalid" % k]}]})
    return dict(labels)


def standin_hz_find_key(cloud, ref):
    keys = cloud.keys["hetzner"]
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return keys.get(ref)
    if isinstance(ref, str):
        for k in keys.values():
            if k["name"] == ref:
                return k
        if ref.isdigit():
            return keys.get(int(ref))
    return None


def standin_hz_route(h, cloud, method, path, q, body):
    parts = [p for p in path.split("/") if p][1:]  # drop "v1"

    def invalid(field, msg):
        return StandinError(400, "invalid_input", "invalid input in field '%s'" % field,
                            {"fields": [{"name": field, "messages": [msg]}]})

    if parts == ["servers"] and method == "POST":
        if not isinstance(body, dict):
            raise StandinError(400, "json_error", "invalid JSON input in your request")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("name", "is missing")
        if not STANDIN_HZ_NAME.match(name):
            raise invalid("name", "must be a valid hostname")
        for f in ("server_type", "image"):
            if not isinstance(body.get(f), (str, int)) or body.get(f) == "":
                raise invalid(f, "is missing")
        loc = body.get("location") or "fsn1"
        if not isinstance(loc, str):
            raise invalid("location", "must be a string")
        labels = standin_hz_labels(body.get("labels"))
        user_data = body.get("user_data")
        if user_data is not None and not isinstance(user_data, str):
            raise invalid("user_data", "must be a string")
        refs = body.get("ssh_keys") or []
        if not isinstance(refs, list):
            raise invalid("ssh_keys", "must be a list")
        with cloud.lock:
            if any(v.name == name for v in cloud.vms["hetzner"].values()):
                raise StandinError(409, "uniqueness_error", "server name is already used",
                                   {"fields": [{"name": "name"}]})
            found = [standin_hz_find_key(cloud, r) for r in refs]
            if any(k is None for k in found):
                raise StandinError(404, "not_found", "SSH key not found")
            vm = cloud.vm_new("hetzner", name)
            vm.region, vm.size, vm.image = loc, str(body["server_type"]), str(body["image"])
            vm.labels = labels
            vm.pubkeys = [k["public_key"] for k in found]
            vm.user_data = user_data
            acts = []
            for cmd in ("create_server", "start_server"):
                aid = cloud.new_id("hz_action")
                cloud.actions["hetzner"][aid] = {"id": aid, "command": cmd,
                                                 "resource_id": vm.id, "started": time.time()}
                vm.action_ids.append(aid)
                acts.append(cloud.actions["hetzner"][aid])
            cloud.vms["hetzner"][vm.id] = vm
            resp = {"server": standin_hz_server(cloud, vm),
                    "action": standin_hz_action(cloud, acts[0]),
                    "next_actions": [standin_hz_action(cloud, acts[1])],
                    "root_password": None if found else "YItygq1v3GYjjMomLaKc"}
        cloud.vm_launch(vm)
        return 201, resp, []
    if parts == ["servers"] and method == "GET":
        page, per_page = cloud.page_args(q, 25, 50)
        sel = q.get("label_selector", [None])[0]
        name = q.get("name", [None])[0]
        with cloud.lock:
            vms = sorted(cloud.vms["hetzner"].values(), key=lambda v: v.id)
            if sel is not None:
                pred = standin_hz_selector(sel)
                vms = [v for v in vms if pred(v.labels)]
            if name is not None:
                vms = [v for v in vms if v.name == name]
            chunk = [standin_hz_server(cloud, v)
                     for v in vms[(page - 1) * per_page:page * per_page]]
        return 200, {"servers": chunk,
                     "meta": {"pagination": standin_hz_pagination(page, per_page, len(vms))}}, \
            h.hz_link(path, q, page, per_page, len(vms))
    if len(parts) == 2 and parts[0] == "servers":
        if not parts[1].isdigit():
            raise invalid("id", "must be an integer")
        vid = int(parts[1])
        if method == "GET":
            with cloud.lock:
                vm = cloud.vms["hetzner"].get(vid)
                if vm is None:
                    raise StandinError(404, "not_found", "server with ID '%d' not found" % vid)
                s = standin_hz_server(cloud, vm)
            hdrs = [("X-Standin-SSH-Port", str(vm.ssh_port))] if vm.ssh_port else []
            return 200, {"server": s}, hdrs
        if method == "DELETE":
            with cloud.lock:
                vm = cloud.vms["hetzner"].get(vid)
                if vm is None:
                    raise StandinError(404, "not_found", "server with ID '%d' not found" % vid)
                aid = cloud.new_id("hz_action")
                now = time.time()
                a = {"id": aid, "command": "delete_server", "resource_id": vid,
                     "started": now, "done_at": now}
                cloud.actions["hetzner"][aid] = a
            cloud.vm_delete("hetzner", vid)
            with cloud.lock:
                return 200, {"action": standin_hz_action(cloud, a)}, []
    if len(parts) == 2 and parts[0] == "actions" and method == "GET":
        if not parts[1].isdigit():
            raise invalid("id", "must be an integer")
        with cloud.lock:
            a = cloud.actions["hetzner"].get(int(parts[1]))
            if a is None:
                raise StandinError(404, "not_found",
                                   "action with ID '%s' not found" % parts[1])
            return 200, {"action": standin_hz_action(cloud, a)}, []
    if parts == ["ssh_keys"] and method == "POST":
        if not isinstance(body, dict):
            raise StandinError(400, "json_error", "invalid JSON input in your request")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid("name", "is missing")
        parsed = standin_parse_pubkey(body.get("public_key"))
        if parsed is None:
            raise invalid("public_key", "is not a valid SSH public key")
        labels = standin_hz_labels(body.get("labels"))
        fp = standin_md5_fp(parsed[1])
        with cloud.lock:
            if any(k["fingerprint"] == fp for k in cloud.keys["hetzner"].values()):
                raise StandinError(409, "uniqueness_error",
                                   "SSH key with the same fingerprint already exists",
                                   {"fields": [{"name": "public_key"}]})
            if any(k["name"] == name for k in cloud.keys["hetzner"].values()):
                raise StandinError(409, "uniqueness_error",
                                   "SSH key with the same name already exists",
                                   {"fields": [{"name": "name"}]})
            kid = cloud.new_id("hz_key")
            k = {"id": kid, "name": name, "fingerprint": fp,
                 "public_key": body["public_key"].strip(), "labels": labels,
                 "created": time.time()}
            cloud.keys["hetzner"][kid] = k
            return 201, {"ssh_key": standin_hz_key_json(k)}, []
    if parts == ["ssh_keys"] and method == "GET":
        page, per_page = cloud.page_args(q, 25, 50)
        with cloud.lock:
            keys = sorted(cloud.keys["hetzner"].values(), key=lambda k: k["id"])
            if "name" in q:
                keys = [k for k in keys if k["name"] == q["name"][0]]
            if "fingerprint" in q:
                keys = [k for k in keys if k["fingerprint"] == q["fingerprint"][0]]
            if "label_selector" in q:
                pred = standin_hz_selector(q["label_selector"][0])
                keys = [k for k in keys if pred(k["labels"])]
            chunk = [standin_hz_key_json(k) for k in keys[(page - 1) * per_page:page * per_page]]
        return 200, {"ssh_keys": chunk,
                     "meta": {"pagination": standin_hz_pagination(page, per_page, len(keys))}}, \
            h.hz_link(path, q, page, per_page, len(keys))
    if len(parts) == 2 and parts[0] == "ssh_keys" and method in ("GET", "DELETE"):
        if not parts[1].isdigit():
            raise invalid("id", "must be an integer")
        with cloud.lock:
            k = cloud.keys["hetzner"].get(int(parts[1]))
            if k is None:
                raise StandinError(404, "not_found",
                                   "SSH key with ID '%s' not found" % parts[1])
            if method == "GET":
                return 200, {"ssh_key": standin_hz_key_json(k)}, []
            del cloud.keys["hetzner"][k["id"]]
        return 204, None, []
    raise StandinError(404, "not_found", "not found")


# ---- HTTP ----------------------------------------------------------------------------------

class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin-cloud/1"
    cloud = None  # set in main

    def log_message(self, fmt, *args):
        pass  # one line per request is written by handle_any

    def base_url(self):
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        return "http://" + host

    def hz_link(self, path, q, page, per_page, total):
        last = max(1, (total + per_page - 1) // per_page)
        if last == 1:
            return []

        def url(p):
            qq = {k: v[0] for k, v in q.items() if k not in ("page", "per_page")}
            qq["page"] = str(p)
            qq["per_page"] = str(per_page)
            return "<%s%s?%s>" % (self.base_url(), path, urllib.parse.urlencode(qq))

        links = []
        if page > 1:
            links.append(url(page - 1) + '; rel="prev"')
        if page < last:
            links.append(url(page + 1) + '; rel="next"')
        links.append(url(last) + '; rel="last"')
        return [("Link", ", ".join(links))]

    def send_json(self, status, obj, headers):
        data = b"" if obj is None else json.dumps(obj).encode()
        try:
            self.send_response(status)
            have_ctype = False
            for k, v in headers:
                if k.lower() == "content-type":
                    have_ctype = True
                self.send_header(k, v)
            if not have_ctype and obj is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)

    def read_body(self):
        n = self.headers.get("Content-Length")
        if n is None:
            return None, None
        try:
            n = int(n)
        except ValueError:
            return None, "bad Content-Length"
        if n > STANDIN_BODY_MAX:
            self.rfile.read(min(n, STANDIN_BODY_MAX))
            self.close_connection = True
            return None, "body too large"
        raw = self.rfile.read(n) if n > 0 else b""
        if not raw:
            return None, None
        try:
            return json.loads(raw), None
        except ValueError:
            return None, "bad json"

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def handle_any(self, method):
        cloud = self.cloud
        u = urllib.parse.urlsplit(self.path)
        path = u.path.rstrip("/") or "/"
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        body, body_err = self.read_body()
        if path.startswith("/_standin/"):
            self.handle_control(method, path, body, body_err)
            return
        if path == "/v2" or path.startswith("/v2/"):
            provider = "do"
        elif path == "/v1" or path.startswith("/v1/"):
            provider = "hetzner"
        else:
            self.send_json(404, {"error": "no such API here"}, [])
            return
        fault = cloud.fault_take(provider, method, path)
        if fault is not None and fault.get("delay_ms"):
            time.sleep(fault["delay_ms"] / 1000.0)
        status, obj, hdrs = self.handle_api(provider, method, path, q, body, body_err, fault)
        hdrs = hdrs + cloud.rate_headers(provider, fault)
        cloud.log_request(provider, method, self.path, status)
        standin_log("%s %s -> %d" % (method, self.path, status))
        self.send_json(status, obj, hdrs)

    def handle_api(self, provider, method, path, q, body, body_err, fault):
        cloud = self.cloud
        if fault is not None and fault.get("status") and not fault.get("after"):
            return self.fault_answer(provider, fault)
        auth = self.headers.get("Authorization", "")
        if auth != "Bearer " + cloud.tokens[provider]:
            if provider == "do":
                return 401, {"id": "unauthorized", "message": "Unable to authenticate you."}, []
            return 401, {"error": {"code": "unauthorized", "message": "unable to authenticate",
                                   "details": None}}, []
        try:
            if body_err is not None:
                if provider == "do":
                    raise StandinError(400, "bad_request", "error parsing request body")
                raise StandinError(400, "json_error", "invalid JSON input in your request")
            if provider == "do":
                status, obj, hdrs = standin_do_route(self, cloud, method, path, q, body)
            else:
                status, obj, hdrs = standin_hz_route(self, cloud, method, path, q, body)
        except StandinError as e:
            if provider == "do":
                obj = {"id": e.code, "message": e.message}
            else:
                obj = {"error": {"code": e.code, "message": e.message, "details": e.details}}
            status, hdrs = e.status, []
        if fault is not None and fault.get("status") and fault.get("after"):
            return self.fault_answer(provider, fault)
        if fault is not None and fault.get("pad_bytes") and isinstance(obj, dict):
            obj = dict(obj)
            obj["standin_padding"] = "x" * fault["pad_bytes"]
        return status, obj, hdrs

    @staticmethod
    def fault_answer(provider, fault):
        st = fault["status"]
        words = {
            429: ("too_many_requests", "API rate limit exceeded.",
                  "rate_limit_exceeded", "limit of 3600 requests per hour reached"),
            500: ("server_error", "Unexpected server-side error",
                  "service_error", "an internal error occurred"),
            502: ("server_error", "Bad gateway", "service_error", "bad gateway"),
            503: ("service_unavailable", "Service is temporarily unavailable",
                  "resource_unavailable", "service temporarily unavailable"),
        }.get(st, ("server_error", "Unexpected server-side error",
                   "service_error", "an internal error occurred"))
        if provider == "do":
            return st, {"id": words[0], "message": words[1]}, []
        return st, {"error": {"code": words[2], "message": words[3], "details": None}}, []

    def handle_control(self, method, path, body, body_err):
        cloud = self.cloud
        try:
            if body_err is not None:
                raise StandinError(400, "bad_request", body_err)
            if path == "/_standin/faults" and method == "POST":
                f = cloud.fault_add(body)
                self.send_json(201, {"fault": f}, [])
            elif path == "/_standin/faults" and method == "DELETE":
                with cloud.lock:
                    cloud.faults = []
                self.send_json(204, None, [])
            elif path == "/_standin/state" and method == "GET":
                self.send_json(200, cloud.state(), [])
            elif path == "/_standin/reset" and method == "POST":
                cloud.reset()
                self.send_json(204, None, [])
            else:
                raise StandinError(404, "not_found", "no such control endpoint")
        except (StandinError, ValueError, TypeError) as e:
            st = e.status if isinstance(e, StandinError) else 400
            self.send_json(st, {"error": str(e)}, [])


def standin_main():
    ap = argparse.ArgumentParser(description="stand-in DigitalOcean / Hetzner Cloud API")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--url-file", help="write the base URL here once listening")
    ap.add_argument("--boot-ms", type=int, default=500,
                    help="how long a new server stays 'new' before it is active")
    ap.add_argument("--hosts-dir", help="each VM gets a folder here")
    ap.add_argument("--sshd", action="store_true",
                    help="start a real sshd per VM (needs --hosts-dir)")
    ap.add_argument("--sshd-bin", default="/usr/sbin/sshd")
    ap.add_argument("--nginx", action="store_true",
                    help="start an nginx per VM serving its sites (needs --sshd)")
    ap.add_argument("--nginx-bin", default="/usr/sbin/nginx")
    ap.add_argument("--ssh-keygen", default="ssh-keygen")
    ap.add_argument("--vm-command",
                    help="each VM is what this command starts (see the top of this file; "
                         "needs --hosts-dir, excludes --sshd)")
    ap.add_argument("--do-token", default="standin-do-token")
    ap.add_argument("--hetzner-token", default="standin-hetzner-token")
    ap.add_argument("--page-max", type=int, default=0,
                    help="cap per_page below the providers' maximum (to test paging)")
    args = ap.parse_args()
    if args.sshd and not args.hosts_dir:
        ap.error("--sshd needs --hosts-dir")
    if args.nginx and not args.sshd:
        ap.error("--nginx needs --sshd")
    if args.vm_command and (not args.hosts_dir or args.sshd):
        ap.error("--vm-command needs --hosts-dir and excludes --sshd")
    if args.hosts_dir:
        args.hosts_dir = os.path.abspath(args.hosts_dir)
        if re.search(r'[\s"%]', args.hosts_dir):
            ap.error("--hosts-dir must not hold spaces, quotes or '%' (sshd_config)")
        os.makedirs(args.hosts_dir, exist_ok=True)

    # Whoever started us may have blocked SIGTERM/SIGINT; unblock them before any thread
    # starts (threads and the sshds inherit the mask) so stopping us works.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    cloud = StandinCloud(args)
    StandinHandler.cloud = cloud
    ThreadingHTTPServer.daemon_threads = True
    httpd = ThreadingHTTPServer((args.listen, args.port), StandinHandler)
    url = "http://%s:%d" % (args.listen, httpd.server_address[1])

    def on_signal(signum, frame):
        # Once: a second signal (Ctrl-C reaches the whole process group, and make run's
        # script sends SIGTERM too) must not interrupt the shutdown that removes the VMs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.url_file:
        tmp = args.url_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(url + "\n")
        os.rename(tmp, args.url_file)
    print(url, flush=True)
    standin_log("listening on %s (boot %d ms%s)" % (
        url, args.boot_ms, ", sshd per VM" if args.sshd else
        ", VMs by --vm-command" if args.vm_command else ""))
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        cloud.shutdown()
        httpd.server_close()
        standin_log("stopped")


if __name__ == "__main__":
    standin_main()
