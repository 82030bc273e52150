#!/usr/bin/env python3
# A real NNTP client for recording: Python's nntplib (3.11; removed in 3.13) connects, reads
# the greeting, asks CAPABILITIES, upgrades with STARTTLS (RFC 4642), then quits inside TLS.
#   python3 nntplib-client.py PORT CAFILE
import ssl
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import nntplib  # noqa: E402

port, cafile = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=cafile)
context.check_hostname = False  # the test certificate is for "localhost", we dial 127.0.0.1
with nntplib.NNTP("127.0.0.1", port, readermode=False, usenetrc=False, timeout=10) as s:
    print(s.getwelcome())
    s.starttls(context)
    print("TLS", s.sock.version())
