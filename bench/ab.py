#!/usr/bin/env python3
"""Interleaved A/B of splitter binaries, for a hot-path change before `cargo xtask bench`.

    python3 bench/ab.py base=/tmp/splitter-base,new=target/release/splitter ROUNDS SECONDS \
        pinned|unpinned [uring|epoll] [BACKENDS]

A contestant is `name=COMMAND`: a splitter binary, or anything that serves `COMMAND run -c FILE`
with the same configuration (such as `bench/uring-floor`, whose flags follow its path:
`floor="target/release/uring-floor --defer"`); `haproxy=haproxy` is Debian's HAProxy forwarding
to the first backend, set up as `cargo xtask bench` does, the yardstick in the same rounds.

The same mock backends (the splitter's, `MOCK` to name another binary) and the same wrk load (`bench/post-2k.lua`, -t1
-c64) for every binary, which take turns (the order reversed every other round, so a slow spell
weighs on all); each round reports the splitter's CPU µs per request (/proc/PID/stat) and, with
PERF=1 in the environment, system calls, io_uring submissions and completions and context
switches per request (perf stat -p); with CPUSTAT=1, how busy each CPU was. Medians at the end. Needs wrk, taskset, and perf for PERF=1.
SCRIPT and CONNS in the environment change the load: `SCRIPT=post-2k-light.lua CONNS=160` has
each connection pause 20 ms between requests, so every contestant gets the same request rate,
below what any of them can serve, and is compared at the same batching.
"""
import os, subprocess, sys, time, socket, re, statistics, shlex
bins = dict(a.split('=', 1) for a in sys.argv[1].split(','))
rounds = int(sys.argv[2]); secs = int(sys.argv[3]); mode = sys.argv[4]  # pinned|unpinned
io = sys.argv[5] if len(sys.argv) > 5 else 'uring'
backends = int(sys.argv[6]) if len(sys.argv) > 6 else 2
HZ = os.sysconf('SC_CLK_TCK')
load_cpu = ['taskset', '-c', '1'] if mode == 'pinned' else []
tgt_cpu = ['taskset', '-c', '0'] if mode == 'pinned' else []
workers = 1 if mode == 'pinned' else 2
# The mock backends are the splitter's own (`MOCK` names another binary).
mock = os.environ.get('MOCK', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'target', 'release', 'splitter'))
mocks = []
addrs = []
for i in range(backends):
    p = subprocess.Popen(load_cpu + [mock, 'mock-backend', '--listen', '127.0.0.1:0', '--name', chr(97+i), '--body-bytes', '2048', '--price-range', '0.1..10'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline(); addrs.append(line.split()[-1]); mocks.append(p)
def cpu(pid):
    """User and system CPU seconds of `pid`, all threads."""
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return int(f[11]) / HZ, int(f[12]) / HZ
def cpu_busy():
    """Busy and total jiffies of each CPU (/proc/stat), for CPUSTAT=1."""
    out = {}
    for line in open('/proc/stat'):
        f = line.split()
        if re.fullmatch(r'cpu\d+', f[0]):
            v = [int(x) for x in f[1:9]]
            out[f[0]] = (sum(v) - v[3] - v[4], sum(v))
    return out
def free_port():
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(('127.0.0.1', 0)); port = a.getsockname()[1]
            try:
                b.bind(('127.0.0.1', port + 1)); return port
            except OSError: continue
def run(name, bin):
    # A fresh port per run: a process that used io_uring can hold its listener a little while
    # after it exits, and the next contestant must not race it.
    port = free_port()
    cfg = f'listen = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{port+1}"\nworkers = {workers}\nio = "{io}"\nhandover_socket = "/tmp/ab-handover.sock"\n'
    for i, a in enumerate(addrs):
        cfg += f'[[backend]]\nname = "{chr(97+i)}"\naddress = "{a}"\n'
    cfg += '[[route]]\npath_prefix = "/"\ntimeout_ms = 450\n'
    # More configuration for one contestant, e.g. AB_EXTRA_new='[steering]\nmode = "reuseport"'.
    cfg += os.environ.get(f'AB_EXTRA_{name}', '').replace('\\n', '\n') + '\n'
    open('/tmp/ab.toml', 'w').write(cfg)
    if bin == 'haproxy':
        threads = 1 if mode == 'pinned' else 2
        open('/tmp/ab-haproxy.cfg', 'w').write(f'global\n    nbthread {threads}\n    maxconn 4096\ndefaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\nfrontend bench\n    bind 127.0.0.1:{port}\n    default_backend mock\nbackend mock\n    server mock {addrs[0]}\n')
        cmd = ['haproxy', '-db', '-f', '/tmp/ab-haproxy.cfg']
    else:
        exe, *flags = shlex.split(bin)
        cmd = [exe, 'run', '-c', '/tmp/ab.toml', *flags]
    p = subprocess.Popen(tgt_cpu + cmd, stdout=subprocess.DEVNULL, stderr=open('/tmp/ab-target.log', 'w'))
    for _ in range(100):
        try:
            socket.create_connection(('127.0.0.1', port), 0.2).close(); break
        except OSError: time.sleep(0.05)
    url = f'http://127.0.0.1:{port}/'
    wrk = load_cpu + ['wrk', '-t1', '-c' + os.environ.get('CONNS', '64'), '-s', os.path.join(os.path.dirname(os.path.abspath(__file__)), os.environ.get('SCRIPT', 'post-2k.lua'))]
    subprocess.run(wrk + ['-d1s', url], capture_output=True)
    c0 = cpu(p.pid)
    perf = subprocess.Popen(['perf', 'stat', '-x,', '-e', 'raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete,context-switches', '-p', str(p.pid), '--', 'sleep', str(secs)], stderr=subprocess.PIPE, text=True) if os.environ.get('PERF') else None
    b0 = cpu_busy()
    ran = subprocess.run(wrk + [f'-d{secs}s', url], capture_output=True, text=True)
    out = ran.stdout
    if os.environ.get('CPUSTAT'):
        b1 = cpu_busy()
        print('    busy', ' '.join(f'{c}={100 * (b1[c][0] - b0[c][0]) / max(1, b1[c][1] - b0[c][1]):.0f}%' for c in b1))
    c1 = cpu(p.pid)
    if perf:
        err = perf.communicate()[1]
        n0 = int(re.search(r'(\d+) requests in', out).group(1))
        print('   ', ' '.join(f"{l.split(',')[2].split(':')[-1]}={int(l.split(',')[0])/n0:.2f}" for l in err.strip().splitlines() if l and l[0].isdigit()))
    done = re.search(r'(\d+) requests in', out)
    if not done:
        p.terminate()
        sys.exit(f'{bin}: wrk measured nothing:\n{out}{ran.stderr}\n' + open('/tmp/ab-target.log').read() + subprocess.run(['ss', '-ltnp'], capture_output=True, text=True).stdout)
    n = int(done.group(1))
    p.terminate(); p.wait()
    user, sys_ = ((b - a) * 1e6 / n for a, b in zip(c0, c1))
    return user + sys_, user, n / secs
res = {k: [] for k in bins}
users = {k: [] for k in bins}
try:
  for r in range(rounds):
    for k, b in (bins.items() if r % 2 == 0 else reversed(list(bins.items()))):
        us, user, rps = run(k, b); res[k].append(us); users[k].append(user)
        print(f'round {r} {k}: {us:.1f} µs/req (user {user:.1f}) {rps:.0f} req/s', flush=True)
  for k, v in res.items():
    print(f'{k}: median {statistics.median(v):.1f} µs/req (user {statistics.median(users[k]):.1f})  runs {[round(x,1) for x in v]}')
finally:
  for m in mocks: m.terminate()
