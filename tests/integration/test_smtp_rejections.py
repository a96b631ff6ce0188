import socket, smtplib, time
from tests.integration.conftest import MailSystem

def talk(port, lines, src="127.0.0.1"):
    s = socket.create_connection(("127.0.0.1", port), source_address=(src, 0), timeout=10)
    f = s.makefile("rb")
    out = [f.readline()]
    for line in lines:
        s.sendall(line + b"\r\n")
        while True:
            r = f.readline()
            out.append(r)
            if r[3:4] != b"-":
                break
    s.close()
    return out

def test_probe(mail_system: MailSystem, domain: str) -> None:
    mail_system.add_user(f"a@{domain}")
    port = mail_system.smtp_port
    for l in talk(port, [b"EHLO x", b"FOO bar", b"", b"\xff\xfe", b"NOOP", b"RCPT TO:<a@%s>" % domain.encode(), b"DATA",
                         b"MAIL FROM:<a b@c>", b"MAIL FROM:<>", b"RCPT TO:<foo>", b"RCPT TO:<@@>", b"RCPT TO:<a@@b>", b"RCPT TO:<a@[1.2.3.4]>",
                         b"RCPT TO:<a..b@%s>" % domain.encode(), b"RCPT TO:<\"q\"@%s>" % domain.encode(), b"RCPT TO:a@%s" % domain.encode(),
                         b"RCPT TO:<a@-bad-.com>", b"RCPT TO:<a@x y>", b"RCPT TO:", b"RCPT TO:<>", b"RSET", b"MAIL FROM:<x@y> SIZE=abc",
                         b"MAIL FROM:<x@y> BODY=9BIT", b"MAIL FROM:<x@y> FOO=1", b"MAIL FROM:<x@y> SIZE=99999999999", b"VRFY a", b"EXPN a", b"HELP", b"RSET", b"NOOP", b"QUIT"], src="127.0.0.9"):
        print(l)
    s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.10", 0), timeout=10)
    f = s.makefile("rb")
    print(f.readline())
    t = time.monotonic()
    n = 0
    got = None
    while got is None and n < 20000:
        s.sendall(b"NOOP\r\n" * 100)
        for _ in range(100):
            r = f.readline()
            if not r.startswith(b"250"):
                got = r
                break
        n += 100
    print(n, got, time.monotonic() - t)
    try:
        print(f.read())
    except OSError as e:
        print("err", e)
    assert 0
