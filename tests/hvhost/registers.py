"""Where the nested layer's vCPU is (tests/hvhost/outer.sh, when the layer
stopped responding): asks QEMU's monitor for `info registers` three times, a
second apart, and names RIP from symbol tables: the layer kernel's (its
/proc/kallsyms, saved at boot; the layer boots with nokaslr) and the Linux
guest kernel's System.map (the RIP of a nested guest the layer was running).
Usage: registers.py MONITOR_SOCKET LABEL=SYMBOL_FILE..."""

import bisect
import re
import socket
import sys
import time


def symbols(path):
    syms = []
    try:
        for line in open(path):
            addr, kind, name = line.split()[:3]
            if kind in "tTwW":
                syms.append((int(addr, 16), name))
    except OSError:
        pass
    return sorted(syms)


def main():
    mon = sys.argv[1]
    tables = []
    for arg in sys.argv[2:]:
        label, _, path = arg.partition("=")
        syms = symbols(path)
        if syms:
            tables.append((label, syms, [a for a, _ in syms]))

    def name(rip):
        # Both kernels link at the same base: every table that can name
        # the address is shown (the registers tell which one ran).
        names = []
        for label, syms, keys in tables:
            i = bisect.bisect_right(keys, rip) - 1
            if i >= 0 and rip - keys[i] < 1 << 16:
                names.append("%s: %s+0x%x" % (label, syms[i][1], rip - keys[i]))
        return "; ".join(names) or "? (in no symbol table: %s)" % ", ".join(t[0] for t in tables)

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(mon)

    def cmd(c):
        s.sendall((c + "\n").encode())
        out = b""
        try:
            while not out.rstrip().endswith(b"(qemu)"):
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except socket.timeout:
            pass
        return out.decode(errors="replace")

    cmd("")
    for _ in range(3):
        out = cmd("info registers")
        m = re.search(r"RIP=([0-9a-f]+)", out)
        rip = int(m.group(1), 16) if m else None
        print("RIP %s = %s" % ("%x" % rip if m else "?", name(rip) if m else "?"))
        for line in out.splitlines():
            if re.match(r"^(RAX|RSI|R8 |R12|RIP|CS |CR0|EFER|HLT)", line):
                print("  " + line)
        time.sleep(1)


if __name__ == "__main__":
    main()
