# security_api_flood_test.sh: the API under a flood (issue 14). While 1,000 idle TCP
# connections and 300 Server-Sent Events streams are held open, from several loopback
# source addresses (127.0.1.x, 127.0.2.x: a per-address limit stops one address),
# GET /api/v1/health and a signed webhook still answer within 1 s each. Then: one address
# gets no more than the per-address limit; a token gets at most 32 streams (429 after);
# revoking a token ends its streams; idle connections that never send a request are
# closed by the read deadline, slow ones that trickle their headers by the header deadline. Traffic goes to 127.0.0.0/8 only; everything stops by itself.
source "$(dirname "$0")/lib.sh"

ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 4096 ] || fail "needs 4096 descriptors (ulimit -n is $(ulimit -n))"

# A site to send webhooks to (its server is a row: no agent is needed to answer a hook).
t_row_site '{"server":"web-1","domain":"flood.test"}'
out=$SITE_OUT
# Its site.create job would wait for an agent that never comes (and hold up the stop).
JOB=$(echo "$out" | jq -r .job_id)
api -X POST "$T_URL/api/v1/jobs/$JOB/cancel" >/dev/null
t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$JOB | jq -e '.state == \"cancelled\" or .state == \"failed\" or .state == \"failed_dirty\"'" ||
	fail "site.create job $JOB did not end"

# Ten tokens for the streams (30 each: under the per-token cap of 32).
: >"$T_TMP/tokens"
: >"$T_TMP/token_ids"
for i in $(seq 0 9); do
	out=$(api -X POST "$T_URL/api/v1/tokens" -d "{\"name\":\"sse-$i\"}")
	echo "$out" | jq -r .token >>"$T_TMP/tokens"
	echo "$out" | jq -r .id >>"$T_TMP/token_ids"
done
REVOKE_ID=$(sed -n 2p "$T_TMP/token_ids")

PORT=${T_URL##*:}
export PORT SITE SECRET TOKEN REVOKE_ID T_TMP
python3 - <<'PY' || fail "flood: see above"
import hashlib, hmac, http.client, os, select, socket, subprocess, sys, threading, time

port = int(os.environ["PORT"]); site = os.environ["SITE"]; secret = os.environ["SECRET"].encode()
admin = os.environ["TOKEN"]; revoke_id = os.environ["REVOKE_ID"]
tokens = open(os.environ["T_TMP"] + "/tokens").read().split()
IDLE, SSE, PER_ADDR = 1000, 300, 40
bad = []

def conn_from(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s

gone = set()
def closed(s):
    """The server closed s (EOF or reset); reads what came before; does not block."""
    if s in gone:
        return True
    s.setblocking(False)
    try:
        while True:
            d = s.recv(65536)
            if d == b"":
                gone.add(s)
                return True
    except BlockingIOError:
        return False
    except OSError:
        gone.add(s)
        return True
    finally:
        s.setblocking(True)

def timed(fn):
    t0 = time.monotonic()
    try:
        status, body = fn()
    except Exception as e:
        status, body = 0, str(e)
    return time.monotonic() - t0, status, body

def health():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/api/v1/health")
    r = c.getresponse(); b = r.read(); c.close()
    return r.status, b

n_ping = [0]
def webhook():
    n_ping[0] += 1
    body = ('{"zen":"flood %d","hook_id":1}' % n_ping[0]).encode()
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("POST", "/hooks/" + site, body, {"Content-Type": "application/json",
              "X-GitHub-Event": "ping", "X-GitHub-Delivery": "flood-%d" % n_ping[0],
              "X-Hub-Signature-256": sig})
    r = c.getresponse(); b = r.read(); c.close()
    return r.status, b

def sse_open(src, tok):
    s = conn_from(src)
    s.sendall(("GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
               "Accept: text/event-stream\r\n\r\n" % tok).encode())
    return s

def sse_status(s, deadline):
    """The stream's status code once its first comment came (or 0)."""
    got = b""
    while time.monotonic() < deadline:
        p = select.poll()
        p.register(s, select.POLLIN)
        if not p.poll(max(0, deadline - time.monotonic()) * 1000):
            break
        try:
            d = s.recv(4096)
        except OSError:
            break
        if not d:
            break
        got += d
        if b"\r\n\r\n" in got:
            status = int(got.split(b" ", 2)[1])
            if status != 200 or b": stoke events" in got:
                return status
    return 0

# Slow clients: a header line every 4 s (never silent for the 10 s read deadline); the
# 30 s header deadline must close them.
slow_ended = {}
def trickle(socks):
    start = time.monotonic()
    for s in socks:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    while len(slow_ended) < len(socks) and time.monotonic() - start < 50:
        time.sleep(4)
        for i, s in enumerate(socks):
            if i in slow_ended:
                continue
            try:
                s.sendall(b"X-Slow: 1\r\n")
                s.setblocking(False)
                if s.recv(1024) == b"":
                    slow_ended[i] = time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                slow_ended[i] = time.monotonic() - start
            finally:
                s.setblocking(True)
slow = [conn_from("127.0.5.1") for i in range(5)]
slow_thread = threading.Thread(target=trickle, args=(slow,))
slow_thread.start()

t0 = time.monotonic()
idle = [conn_from("127.0.1.%d" % (1 + i // PER_ADDR)) for i in range(IDLE)]
sse = [sse_open("127.0.2.%d" % (1 + i // 30), tokens[i // 30]) for i in range(SSE)]
deadline = time.monotonic() + 10
ok_streams = sum(1 for s in sse if sse_status(s, deadline) == 200)
print("opened %d idle connections and %d streams (%d answered 200) in %.2f s"
      % (len(idle), len(sse), ok_streams, time.monotonic() - t0))
if ok_streams != SSE:
    bad.append("only %d of %d streams opened" % (ok_streams, SSE))

lat_h, lat_w = [], []
for i in range(10):
    dt, st, b = timed(health); lat_h.append(dt)
    if st != 200 or dt > 1.0:
        bad.append("health under flood: %s in %.3f s: %r" % (st, dt, b[:200]))
    dt, st, b = timed(webhook); lat_w.append(dt)
    if st != 200 or b"pong" not in b or dt > 1.0:
        bad.append("webhook under flood: %s in %.3f s: %r" % (st, dt, b[:200]))
still = sum(1 for s in idle if not closed(s))
print("under flood: health max %.1f ms (median %.1f), signed webhook max %.1f ms (median %.1f);"
      " %d idle connections still open" % (max(lat_h) * 1000, sorted(lat_h)[5] * 1000,
      max(lat_w) * 1000, sorted(lat_w)[5] * 1000, still))
if still < IDLE * 9 // 10:
    bad.append("the flood was not held: only %d idle connections open" % still)

# One address: at most the per-address limit (64) is kept.
one = [conn_from("127.0.3.1") for i in range(100)]
time.sleep(1)
kept = sum(1 for s in one if not closed(s))
print("one address opened 100 connections; %d kept" % kept)
if kept > 64:
    bad.append("one address kept %d connections (limit 64)" % kept)
for s in one:
    s.close()

# The per-token cap: token 0 has 30 streams; 2 more fit, the third is refused.
extra = [sse_open("127.0.4.1", tokens[0]) for i in range(3)]
codes = [sse_status(s, time.monotonic() + 5) for s in extra]
print("token 0's streams 31-33 answered %s" % codes)
if sorted(codes) != [200, 200, 429]:
    bad.append("per-token stream cap: %s, want two 200 and one 429" % codes)

# Revoking token 1 ends its 30 streams.
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("DELETE", "/api/v1/tokens/" + revoke_id, headers={"Authorization": "Bearer " + admin})
r = c.getresponse(); r.read(); c.close()
if r.status != 200:
    bad.append("revoke: %d" % r.status)
t1 = time.monotonic()
mine = sse[30:60]
while time.monotonic() - t1 < 5 and not all(closed(s) for s in mine):
    time.sleep(0.1)
ended = sum(1 for s in mine if closed(s))
others = sum(1 for s in sse[60:] if closed(s))
print("revoked token's streams ended: %d of 30 in %.2f s; other streams ended: %d"
      % (ended, time.monotonic() - t1, others))
if ended != 30:
    bad.append("revoking a token ended %d of its 30 streams" % ended)
if others:
    bad.append("%d streams of other tokens ended" % others)

# Idle connections that never sent a request are closed by the read deadline.
t2 = time.monotonic()
while time.monotonic() - t2 < 20 and not all(closed(s) for s in idle):
    time.sleep(0.5)
left = sum(1 for s in idle if not closed(s))
print("%d idle connections left %.1f s after the flood began" % (left, time.monotonic() - t0))
if left:
    bad.append("%d idle connections were never closed" % left)
slow_thread.join()
print("slow clients (a header line every 4 s) closed after %s s"
      % sorted(round(v, 1) for v in slow_ended.values()))
if len(slow_ended) != len(slow) or min(slow_ended.values()) < 25:
    bad.append("slow clients: closed after %s s, want all, after the 30 s header deadline"
               % slow_ended)
dt, st, b = timed(health)
if st != 200:
    bad.append("health after the flood: %s" % st)
for s in idle + sse + extra:
    s.close()
for b in bad:
    print("FAIL: " + b)
sys.exit(1 if bad else 0)
PY
ok "health and a signed webhook answer within 1 s under 1,000 idle connections and 300 streams; per-address limit, per-token stream cap, revocation, read and header deadlines hold"
kill -TERM "$T_PID"
t_wait 15 t_gone "$T_PID" || fail "stoked did not stop within 15 s with streams open"
! grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$T_LOG" || fail "sanitizer report in the stoked log"
ok "stoked stops promptly after the flood"
