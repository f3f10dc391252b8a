#!/usr/bin/env python3
"""Checks that a CUDA binary carries real machine code (an ELF cubin) for every expected SM arch.

usage: check_cubins.py BINARY --arch 80 --arch 90 [--no-ptx] [--cuobjdump PATH]

With --cuobjdump (the CUDA toolkit's, when CMake found one) the lists come from
`cuobjdump --list-elf` / `--list-ptx`. Without it the script reads the binary's .nv_fatbin
section itself (fatbin container header magic 0xBA55ED50; per entry: kind 1 = PTX, 2 = ELF,
SM arch at byte 28 of the entry header), so the check also runs on machines whose toolkit has
no cuobjdump. Exit status 0 = every arch has a cubin (and, with --no-ptx, no PTX is embedded).
"""
import argparse
import re
import struct
import subprocess
import sys


def from_cuobjdump(tool, binary):
    def listing(flag):
        r = subprocess.run([tool, flag, binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # "cuobjdump info : File '...' does not contain device code" -> rc != 0 with nothing listed
        return r.stdout
    elf = [int(m) for m in re.findall(r"\.sm_(\d+)a?\.cubin", listing("--list-elf"))]
    ptx = [int(m) for m in re.findall(r"\.sm_(\d+)a?\.ptx", listing("--list-ptx"))]
    return elf, ptx


def from_fatbin(binary):
    data = open(binary, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise SystemExit("not a 64-bit ELF file: " + binary)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, _typ, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        sections.append((name, offset, size))
    strtab_off = sections[shstrndx][1]

    def section_name(n):
        end = data.index(b"\0", strtab_off + n)
        return data[strtab_off + n:end].decode()

    elf, ptx = [], []
    for name, offset, size in sections:
        if section_name(name) != ".nv_fatbin":
            continue
        p, end_sec = offset, offset + size
        while p + 16 <= end_sec:
            magic, _ver, hsz, fsz = struct.unpack_from("<IHHQ", data, p)
            if magic != 0xBA55ED50:
                p += 8  # containers are 8-byte aligned; skip padding
                continue
            q, end = p + hsz, p + hsz + fsz
            while q + 32 <= end:
                kind, _v, ehs, psz = struct.unpack_from("<HHIQ", data, q)
                arch = struct.unpack_from("<I", data, q + 28)[0]
                (elf if kind == 2 else ptx if kind == 1 else []).append(arch)
                if ehs == 0:
                    break
                q += ehs + psz
            p = end
    return elf, ptx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--arch", type=int, action="append", required=True)
    ap.add_argument("--no-ptx", action="store_true")
    ap.add_argument("--cuobjdump", default="")
    a = ap.parse_args()
    if a.cuobjdump:
        elf, ptx = from_cuobjdump(a.cuobjdump, a.binary)
        how = "cuobjdump --list-elf/--list-ptx"
    else:
        elf, ptx = from_fatbin(a.binary)
        how = "the .nv_fatbin section (no cuobjdump)"
    print("%s via %s: cubins sm_%s; ptx %s" % (a.binary, how, sorted(set(elf)), sorted(set(ptx)) or "none"))
    ok = True
    for arch in a.arch:
        if arch not in elf:
            print("MISSING: no sm_%d cubin (would need PTX JIT or fail on that GPU)" % arch)
            ok = False
    if a.no_ptx and ptx:
        print("UNEXPECTED: PTX embedded for %s (all architectures were asked as -real)" % sorted(set(ptx)))
        ok = False
    if not elf:
        print("no device code found")
        ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
