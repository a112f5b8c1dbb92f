#!/usr/bin/env python3
"""Interleaved A/B of splitter binaries, for a hot-path change before `cargo xtask bench`.

    python3 bench/ab.py base=/tmp/splitter-base,new=target/release/splitter ROUNDS SECONDS \
        pinned|unpinned [uring|epoll] [BACKENDS]

The same mock backends (of the first binary) and the same wrk load (`bench/post-2k.lua`, -t1
-c64) for every binary, which take turns (the order reversed every other round, so a slow spell
weighs on all); each round reports the splitter's CPU µs per request (/proc/PID/stat) and, with
PERF=1 in the environment, system calls, io_uring submissions and completions and context
switches per request (perf stat -p). Medians at the end. Needs wrk, taskset, and perf for PERF=1.
"""
import os, subprocess, sys, time, socket, re, statistics
bins = dict(a.split('=') for a in sys.argv[1].split(','))
rounds = int(sys.argv[2]); secs = int(sys.argv[3]); mode = sys.argv[4]  # pinned|unpinned
io = sys.argv[5] if len(sys.argv) > 5 else 'uring'
backends = int(sys.argv[6]) if len(sys.argv) > 6 else 2
HZ = os.sysconf('SC_CLK_TCK')
load_cpu = ['taskset', '-c', '1'] if mode == 'pinned' else []
tgt_cpu = ['taskset', '-c', '0'] if mode == 'pinned' else []
workers = 1 if mode == 'pinned' else 2
mocks = []
addrs = []
for i in range(backends):
    p = subprocess.Popen(load_cpu + [bins[list(bins)[0]], 'mock-backend', '--listen', '127.0.0.1:0', '--name', chr(97+i), '--body-bytes', '2048', '--price-range', '0.1..10'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline(); addrs.append(line.split()[-1]); mocks.append(p)
def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ
def run(bin):
    port = 19000 + (os.getpid() % 500)
    cfg = f'listen = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{port+1}"\nworkers = {workers}\nio = "{io}"\nhandover_socket = "/tmp/ab-handover.sock"\n'
    for i, a in enumerate(addrs):
        cfg += f'[[backend]]\nname = "{chr(97+i)}"\naddress = "{a}"\n'
    cfg += '[[route]]\npath_prefix = "/"\ntimeout_ms = 450\n'
    open('/tmp/ab.toml', 'w').write(cfg)
    p = subprocess.Popen(tgt_cpu + [bin, 'run', '-c', '/tmp/ab.toml'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(('127.0.0.1', port), 0.2).close(); break
        except OSError: time.sleep(0.05)
    url = f'http://127.0.0.1:{port}/'
    wrk = load_cpu + ['wrk', '-t1', '-c64', '-s', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'post-2k.lua')]
    subprocess.run(wrk + ['-d1s', url], capture_output=True)
    c0 = cpu(p.pid)
    perf = subprocess.Popen(['perf', 'stat', '-x,', '-e', 'raw_syscalls:sys_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete,context-switches', '-p', str(p.pid), '--', 'sleep', str(secs)], stderr=subprocess.PIPE, text=True) if os.environ.get('PERF') else None
    out = subprocess.run(wrk + [f'-d{secs}s', url], capture_output=True, text=True).stdout
    c1 = cpu(p.pid)
    if perf:
        err = perf.communicate()[1]
        n0 = int(re.search(r'(\d+) requests in', out).group(1))
        print('   ', ' '.join(f"{l.split(',')[2].split(':')[-1]}={int(l.split(',')[0])/n0:.2f}" for l in err.strip().splitlines() if l and l[0].isdigit()))
    n = int(re.search(r'(\d+) requests in', out).group(1))
    p.terminate(); p.wait()
    return (c1 - c0) * 1e6 / n, n / secs
res = {k: [] for k in bins}
for r in range(rounds):
    for k, b in (bins.items() if r % 2 == 0 else reversed(list(bins.items()))):
        us, rps = run(b); res[k].append(us)
        print(f'round {r} {k}: {us:.1f} µs/req {rps:.0f} req/s', flush=True)
for k, v in res.items():
    print(f'{k}: median {statistics.median(v):.1f} µs/req  runs {[round(x,1) for x in v]}')
for m in mocks: m.terminate()
