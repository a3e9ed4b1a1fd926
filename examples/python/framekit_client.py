#!/usr/bin/env python3
"""A framekit file-transfer client in one file.

Written from PROTOCOL.md alone, with the standard library's socket,
ssl and struct modules and the `blake3` package (pip install blake3). It
speaks protocol version 1 and has the same command line, output and exit
codes as the Rust `client`:

    framekit_client.py [OPTIONS] put FILE [--name NAME] [--force]
    framekit_client.py [OPTIONS] get NAME [--output PATH] [--force]
    framekit_client.py [OPTIONS] list [PREFIX]
    framekit_client.py [OPTIONS] stat NAME
    framekit_client.py [OPTIONS] delete NAME

OPTIONS (before or after the command):

    --server ADDR      HOST:PORT, HOST or IP; default $FRAMEKIT_SERVER, else
                       127.0.0.1:7878
    --quiet, -q        no progress and no status messages
    --tls              TLS, checking the server's certificate and name
                       against the system's trust store (or --ca)
    --ca PEM           trust the certificates in PEM instead (a private CA or
                       the server's self-signed certificate); implies --tls
    --token-file PATH  send the first non-blank line of PATH as the access
                       token (overrides $FRAMEKIT_TOKEN, which is sent
                       otherwise, if set and not empty)

Exit codes: 0 success; 1 other error; 2 usage error; 3 connection failed,
lost or timed out, handshake or TLS failed (an untrusted certificate, a
certificate for another name, a server that does not speak TLS, or a TLS
server reached without --tls); 4 remote file not found; 5 already exists
(the remote file on put without --force, the local destination on get
without --force); 6 integrity mismatch; 7 refused by the server (busy,
unauthorized, forbidden, timeout, ...; or an invalid name, or a protocol
violation by the server); 8 local file error (including an unusable --ca
or --token-file).

The protocol part (Session and the encoding helpers) does not print or exit
and can be imported: see main() for how the commands use it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import ssl
import stat as stat_module
import struct
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

try:
    import blake3
except ImportError:  # pragma: no cover - reported by main()
    blake3 = None

# --- Protocol constants (PROTOCOL.md, "Constants") ---------------------------

MAGIC = b"FRAMEKIT"
VERSION = 1
PREFIX_LEN = 4
MAX_MESSAGE_LEN = 65536
MAX_NAME_LEN = 1024
MAX_COMPONENT_LEN = 255
RESERVED_NAME = ".framekit"
DEFAULT_PORT = 7878
HASH_LEN = 32

# Error codes (PROTOCOL.md, "Error codes"): value -> text.
ERROR_TEXT = {
    1: "bad request",
    2: "not a framekit client",
    3: "unsupported version",
    4: "unauthorized",
    5: "forbidden",
    10: "not found",
    11: "already exists",
    12: "invalid name",
    13: "too large",
    14: "integrity mismatch",
    15: "no space",
    16: "not a file",
    20: "busy",
    21: "shutting down",
    22: "timeout",
    30: "internal error",
}
NOT_FOUND = 10
ALREADY_EXISTS = 11
INTEGRITY_MISMATCH = 14

# --- Exit codes (the same as the Rust client's) -------------------------------

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_NOT_FOUND = 4
EXIT_EXISTS = 5
EXIT_INTEGRITY = 6
EXIT_REFUSED = 7
EXIT_LOCAL = 8

# Body bytes go through buffers of this size; a file is never held whole.
CHUNK = 1 << 20

CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 30.0
# After the handshake: the server's idle timeout plus this margin, which
# covers the server's own pauses (flushing a large upload to disk).
IDLE_MARGIN = 60.0
# Used when the server announces no idle timeout (0).
DEFAULT_IDLE = 300.0


class ClientError(Exception):
    """A failure with the exit code it ends the program with."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def connection_error(message: str) -> ClientError:
    return ClientError(EXIT_CONNECTION, message)


class ProtocolViolation(ClientError):
    """The server broke the protocol: after the handshake this is reported
    like a refusal (exit code 7), as the Rust client does; during the
    handshake it means the peer is not a framekit server (exit code 3)."""

    def __init__(self, message: str):
        super().__init__(EXIT_REFUSED, "protocol error: " + message)
        self.detail = message


def protocol_error(message: str) -> ClientError:
    return ProtocolViolation(message)


class Malformed(Exception):
    """A frame that does not hold the expected message."""


# --- Text from the network -----------------------------------------------------

# Unicode format characters (category Cf, as of Unicode 15: invisible, they
# change how the text around them is shown), and the line and paragraph
# separators: the same set as the Rust client's.
_INVISIBLE = {0x2028, 0x2029}
for _first, _last in [
    (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
]:
    _INVISIBLE.update(range(_first, _last + 1))


def is_control(ch: str) -> bool:
    """Unicode category Cc: U+0000-U+001F and U+007F-U+009F."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def escape(text: str) -> str:
    """Text from the server, made safe to print on a terminal.

    Control characters become \\t, \\n, \\r or \\u{..}; invisible format
    characters and line/paragraph separators become \\u{..}; a backslash is
    doubled, so an escape in the output always means an escaped character.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif is_control(ch) or ord(ch) in _INVISIBLE:
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


# --- File names (PROTOCOL.md, "File names") ------------------------------------


def is_utf8(text: str) -> bool:
    """Whether `text` can be sent as a protocol string. Command-line text
    that was not UTF-8 holds lone surrogates, which cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(name: str) -> Optional[str]:
    """Why `name` is not a valid remote name, or None if it is."""
    if not is_utf8(name):
        return "the name is not valid UTF-8"
    encoded = name.encode("utf-8")
    if not name:
        return "the name is empty"
    if len(encoded) > MAX_NAME_LEN:
        return "the name is %d bytes long, more than %d" % (len(encoded), MAX_NAME_LEN)
    if name.startswith("/"):
        return "the name is an absolute path"
    for ch in name:
        if ch == "\0":
            return "the name contains a NUL byte"
        if ch == "\\":
            return "the name contains a backslash"
        if is_control(ch):
            return "the name contains a control character"
    components = name.split("/")
    for component in components:
        if component == "":
            return "the name has an empty component"
        if component in (".", ".."):
            return "the name has a '.' or '..' component"
        if len(component.encode("utf-8")) > MAX_COMPONENT_LEN:
            return "a component of the name is longer than %d bytes" % MAX_COMPONENT_LEN
    if components[0] == RESERVED_NAME:
        return "the name is reserved for the server's own use"
    return None


def check_name(name: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise ClientError(
            EXIT_REFUSED, 'invalid remote name "%s": %s' % (escape(_printable(name)), problem)
        )


def _printable(text: str) -> str:
    # Lone surrogates (from command-line text that was not UTF-8) shown as
    # replacement characters.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- Encoding (PROTOCOL.md, "Encoding") ----------------------------------------


class Writer:
    """Builds a message payload: fixed-width little-endian integers."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def u16(self, value: int) -> "Writer":
        self.buf += struct.pack("<H", value)
        return self

    def u32(self, value: int) -> "Writer":
        self.buf += struct.pack("<I", value)
        return self

    def u64(self, value: int) -> "Writer":
        self.buf += struct.pack("<Q", value)
        return self

    def bool(self, value: bool) -> "Writer":
        self.buf.append(1 if value else 0)
        return self

    def raw(self, data: bytes) -> "Writer":
        self.buf += data
        return self

    def string(self, text: str) -> "Writer":
        data = text.encode("utf-8")
        return self.u64(len(data)).raw(data)

    def option(self, value, write: Callable[["Writer", object], object]) -> "Writer":
        if value is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            write(self, value)
        return self


class Reader:
    """Reads a message payload; any inconsistency raises Malformed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise Malformed("the message ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def bool(self) -> bool:
        byte = self.take(1)[0]
        if byte > 1:
            raise Malformed("invalid bool %d" % byte)
        return byte == 1

    def string(self) -> str:
        length = self.u64()
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("a string is not valid UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise Malformed("%d unexpected bytes after the message" % (len(self.data) - self.pos))


# Messages the server sends (PROTOCOL.md, "Response").


@dataclass
class Welcome:
    version: int
    max_file_size: int
    max_message_len: int
    idle_timeout_ms: int
    read_only: bool


@dataclass
class ErrorReply:
    code: int
    message: str

    def describe(self) -> str:
        text = ERROR_TEXT.get(self.code, "error code %d" % self.code)
        return "%s: %s" % (text, escape(self.message))


@dataclass
class PutReady:
    offset: int


@dataclass
class PutDone:
    size: int
    hash: bytes


@dataclass
class GetReady:
    size: int
    offset: int
    modified_ns: int


@dataclass
class Entry:
    name: str
    size: int
    modified_ns: int


@dataclass
class ListEnd:
    count: int


@dataclass
class Deleted:
    pass


def decode_response(payload: bytes):
    r = Reader(payload)
    index = r.u32()
    if index == 0:
        msg = Welcome(r.u16(), r.u64(), r.u32(), r.u64(), r.bool())
    elif index == 1:
        msg = ErrorReply(r.u16(), r.string())
    elif index == 2:
        msg = PutReady(r.u64())
    elif index == 3:
        msg = PutDone(r.u64(), r.take(HASH_LEN))
    elif index == 4:
        msg = GetReady(r.u64(), r.u64(), r.u64())
    elif index == 5:
        msg = Entry(r.string(), r.u64(), r.u64())
    elif index == 6:
        msg = ListEnd(r.u64())
    elif index == 7:
        msg = Deleted()
    else:
        raise Malformed("unknown response variant %d" % index)
    r.end()
    return msg


def decode_trailer(payload: bytes) -> bytes:
    r = Reader(payload)
    digest = r.take(HASH_LEN)
    r.end()
    return digest


def encode_hello(token: Optional[str]) -> bytes:
    w = Writer().raw(MAGIC).u16(VERSION)
    return bytes(w.option(token, Writer.string).buf)


def encode_put(name: str, size: int, overwrite: bool, resume_key: Optional[bytes]) -> bytes:
    w = Writer().u32(0).string(name).u64(size).bool(overwrite)
    return bytes(w.option(resume_key, Writer.raw).buf)


def encode_get(name: str) -> bytes:
    # Offset 0 and no if_version: a whole download.
    return bytes(Writer().u32(1).string(name).u64(0).option(None, Writer.raw).buf)


def encode_list(prefix: str) -> bytes:
    return bytes(Writer().u32(2).string(prefix).buf)


def encode_stat(name: str) -> bytes:
    return bytes(Writer().u32(3).string(name).buf)


def encode_delete(name: str) -> bytes:
    return bytes(Writer().u32(4).string(name).buf)


def encode_trailer(digest: bytes) -> bytes:
    return bytes(digest)


def response_name(msg) -> str:
    return type(msg).__name__


# --- The connection -------------------------------------------------------------


def parse_address(addr: str):
    """HOST:PORT, HOST, IP, or [IPV6]:PORT; the port defaults to 7878."""
    bare = addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr
    try:
        return str(ipaddress.ip_address(bare)), DEFAULT_PORT
    except ValueError:
        pass
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep:
            raise ValueError("invalid address")
    elif ":" in addr:
        host, port = addr.rsplit(":", 1)
    else:
        return addr, DEFAULT_PORT
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("invalid port %r" % port)
    return host, int(port)


# --- TLS (PROTOCOL.md, "Transport") ---------------------------------------------

# OpenSSL's reasons for a handshake answer that is not TLS at all.
_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "UNEXPECTED_RECORD",
    "BAD_PACKET_LENGTH",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
}

# OpenSSL's verification errors that mean "not signed by anyone trusted":
# unable to get the issuer (2, 20), a bad signature (7), a self-signed
# certificate that is not trusted (18, 19), unable to verify the leaf (21).
_UNTRUSTED_CODES = {2, 7, 18, 19, 20, 21}
# The certificate is for other names (62) or other addresses (64).
_NAME_MISMATCH_CODES = {62, 64}


def tls_context(ca: Optional[str]) -> ssl.SSLContext:
    """A TLS client context that checks the server's certificate chain and
    that the certificate is valid for the name connected to: against the
    certificates in the PEM file `ca` (a private CA, or the server's
    self-signed certificate) if given, else the system's trust store."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # PROTOCOL_TLS_CLIENT already requires a certificate and checks the
    # name; say so rather than rely on it.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if ca is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as e:
        reason = (
            "no CERTIFICATE block found"
            if e.reason == "NO_CERTIFICATE_OR_CRL_FOUND"
            else (e.reason or str(e)).lower().replace("_", " ")
        )
        raise ClientError(
            EXIT_LOCAL, "cannot use %s as trusted certificates: %s" % (ca, reason)
        ) from None
    except (OSError, ValueError) as e:
        raise ClientError(
            EXIT_LOCAL, "cannot use %s as trusted certificates: %s" % (ca, _os_message(e))
        ) from None
    return context


def tls_error(addr: str, reason: str) -> ClientError:
    return connection_error("TLS with %s failed: %s" % (addr, reason))


def tls_handshake(
    context: ssl.SSLContext, sock: socket.socket, addr: str, host: str
) -> ssl.SSLSocket:
    """Runs the TLS handshake on `sock` to completion, so that its failures
    are reported as such rather than as a protocol error later. Closes
    `sock` on failure."""
    try:
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except (OSError, ValueError) as e:
        sock.close()
        raise tls_error(addr, "%r is not a valid server name: %s" % (host, e)) from None
    try:
        tls.do_handshake()
        return tls
    except ssl.SSLCertVerificationError as e:
        if e.verify_code in _NAME_MISMATCH_CODES:
            reason = "the server's certificate is not valid for the name '%s'" % host
        elif e.verify_code in _UNTRUSTED_CODES:
            reason = (
                "the server's certificate is not signed by a trusted authority "
                "(for a private CA or a self-signed certificate, pass it with --ca)"
            )
        else:
            reason = "the server's certificate was rejected: %s" % e.verify_message
    except socket.timeout:
        reason = "the server did not complete the TLS handshake (timed out)"
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        reason = "the server closed the connection during the TLS handshake"
    except ssl.SSLError as e:
        if e.reason in _NOT_TLS_REASONS:
            reason = (
                "the server did not answer with TLS "
                "(does it run without --tls-cert? then connect without --tls)"
            )
        else:
            reason = (e.reason or str(e)).lower().replace("_", " ")
    except OSError as e:
        reason = _os_message(e)
    tls.close()
    raise tls_error(addr, reason)


class Session:
    """One connection to a server, after a successful handshake.

    Each method runs one exchange of PROTOCOL.md, "Operations". A server
    refusal raises ClientError with the exit code for its error code.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.welcome: Optional[Welcome] = None

    # Opening.

    @classmethod
    def connect(
        cls, addr: str, token: Optional[str], tls: Optional[ssl.SSLContext] = None
    ) -> "Session":
        """Connects to `addr` and performs the handshake, sending `token`.

        With `tls` (see tls_context()), the connection is encrypted and the
        server's certificate is checked for the host part of `addr`
        (PROTOCOL.md, "Transport") before the hello is sent.
        """
        try:
            host, port = parse_address(addr)
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError, UnicodeError) as e:
            raise connection_error("cannot connect to %s: %s" % (addr, _os_message(e))) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            if tls is not None:
                sock = tls_handshake(tls, sock, addr, host)
            session = cls(sock)
            welcome = session._handshake(token)
            idle = welcome.idle_timeout_ms / 1000.0 if welcome.idle_timeout_ms else DEFAULT_IDLE
            sock.settimeout(idle + IDLE_MARGIN)
        except BaseException:
            sock.close()
            raise
        return session

    def _handshake(self, token: Optional[str]) -> Welcome:
        """PROTOCOL.md, "Handshake and versions"."""
        self._send(encode_hello(token), "handshake")
        head = self.recv_exactly(PREFIX_LEN)
        if head is None:
            raise connection_error("the server closed the connection")
        if head[0] in (0x15, 0x16) and head[1] == 0x03:
            # A TLS record (an alert) where a frame was expected: the server
            # speaks TLS and refused our plain-text hello. No framekit
            # frame starts like this (it would declare over 350 MB).
            raise connection_error(
                "the server did not answer the handshake as a framekit server: "
                "the server speaks TLS: connect with --tls"
            )
        try:
            answer = self._read_response(head)
        except ProtocolViolation as e:
            raise connection_error(
                "the server did not answer the handshake as a framekit server: " + e.detail
            ) from None
        if isinstance(answer, Welcome):
            if answer.version != VERSION:
                raise connection_error(
                    "the server did not answer the handshake as a framekit server: "
                    "the server answered with protocol version %d, this client speaks %d"
                    % (answer.version, VERSION)
                )
            self.welcome = answer
            return answer
        if isinstance(answer, ErrorReply):
            raise refused("handshake", answer)
        raise connection_error(
            "the server did not answer the handshake as a framekit server: "
            "it sent %s while Welcome was expected" % response_name(answer)
        )

    def close(self) -> None:
        if isinstance(self.sock, ssl.SSLSocket):
            # Say goodbye with a TLS close_notify, so that the server knows
            # nothing was cut off. Best effort, and brief.
            try:
                self.sock.settimeout(1.0)
                self.sock.unwrap()
            except (OSError, ValueError):
                pass
        self.sock.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Bytes and frames.

    def recv_into(self, view: memoryview) -> int:
        """Reads at least one byte into `view`; the end of the stream is 0."""
        while True:
            try:
                return self.sock.recv_into(view)
            except InterruptedError:
                continue
            except socket.timeout:
                raise connection_error("the server stopped responding (timed out)") from None
            except OSError as e:
                raise connection_error("connection to the server lost: " + _os_message(e)) from None

    def recv_exactly(self, n: int) -> Optional[bytes]:
        """Exactly n bytes; None if the stream ends before the first one,
        an error if it ends after it."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            count = self.recv_into(view[got:])
            if count == 0:
                if got == 0:
                    return None
                raise connection_error("the server closed the connection")
            got += count
        return bytes(buf)

    def read_frame(self, head: Optional[bytes] = None) -> bytes:
        """The next frame's payload. `head`: its length prefix, if it was
        already read."""
        if head is None:
            head = self.recv_exactly(PREFIX_LEN)
        if head is None:
            raise connection_error("the server closed the connection")
        (length,) = struct.unpack(">I", head)
        if length > MAX_MESSAGE_LEN:
            # Never read (or allocate) what a broken peer declares.
            raise protocol_error(
                "malformed message from the server: frame of %d bytes exceeds the maximum of %d"
                % (length, MAX_MESSAGE_LEN)
            )
        payload = self.recv_exactly(length)
        if payload is None and length > 0:
            raise connection_error("the server closed the connection")
        return payload or b""

    def _read_response(self, head: Optional[bytes] = None):
        payload = self.read_frame(head)
        try:
            return decode_response(payload)
        except Malformed as e:
            raise protocol_error("malformed message from the server: %s" % e) from None

    def _read_trailer(self) -> bytes:
        payload = self.read_frame()
        try:
            return decode_trailer(payload)
        except Malformed as e:
            raise protocol_error("malformed trailer from the server: %s" % e) from None

    def _send(self, payload: bytes, op: str) -> None:
        if len(payload) > MAX_MESSAGE_LEN:
            raise ClientError(EXIT_OTHER, "cannot encode the request: it is too large for a frame")
        self._send_raw(struct.pack(">I", len(payload)) + payload, op)

    def _send_raw(self, data, op: str) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise connection_error("the server stopped responding (timed out)") from None
        except OSError as e:
            # A server that refused and closed may have said why first
            # (busy, shutting down...): that is the better explanation.
            reply = self._salvage()
            if reply is not None:
                raise refused(op, reply) from None
            raise connection_error("connection to the server lost: " + _os_message(e)) from None

    def _salvage(self) -> Optional[ErrorReply]:
        try:
            self.sock.settimeout(1.0)
            answer = decode_response(self.read_frame())
        except (ClientError, Malformed, OSError):
            return None
        return answer if isinstance(answer, ErrorReply) else None

    def _unexpected(self, op: str, expected: str, answer) -> ClientError:
        if isinstance(answer, ErrorReply):
            return refused(op, answer)
        return protocol_error(
            "the server sent %s while %s was expected" % (response_name(answer), expected)
        )

    # Operations.

    def put(
        self,
        source: BinaryIO,
        size: int,
        name: str,
        overwrite: bool,
        progress: Optional["Progress"] = None,
        resume_key: Optional[bytes] = None,
    ) -> PutDone:
        """Uploads `size` bytes read from `source` (positioned at 0) as `name`.

        The body is streamed in CHUNK-sized pieces; raises FileChanged if
        the source does not hold exactly `size` bytes.
        """
        check_name(name)
        self._send(encode_put(name, size, overwrite, resume_key), "put")
        answer = self._read_response()
        if not isinstance(answer, PutReady):
            raise self._unexpected("put", "PutReady", answer)
        offset = answer.offset
        if offset > size or (resume_key is None and offset != 0):
            raise protocol_error(
                "the server announced a body starting at byte %d of %d%s"
                % (offset, size, ", expected 0" if resume_key is None else "")
            )
        if progress is not None:
            progress.start(size - offset)
        hasher = blake3.blake3()
        buf = bytearray(min(CHUNK, max(size, 1)))
        view = memoryview(buf)
        position = 0
        while position < size:
            want = min(len(buf), size - position)
            n = source.readinto(view[:want])
            if not n:
                raise FileChanged(size, position)
            chunk = view[:n]
            hasher.update(chunk)
            if position + n > offset:
                # Only what the server does not have yet is sent; the hash
                # covers the whole file.
                skip = max(offset - position, 0)
                self._send_raw(chunk[skip:], "put")
                if progress is not None:
                    progress.advance(n - skip)
            position += n
        if source.read(1):
            raise FileChanged(size, None)
        digest = hasher.digest()
        self._send(encode_trailer(digest), "put")
        answer = self._read_response()
        if not isinstance(answer, PutDone):
            raise self._unexpected("put", "PutDone", answer)
        if answer.size != size:
            raise protocol_error("the server stored %d bytes, %d were sent" % (answer.size, size))
        if answer.hash != digest:
            raise integrity_error(digest, answer.hash)
        return answer

    def get(
        self,
        name: str,
        sink: BinaryIO,
        progress: Optional["Progress"] = None,
    ):
        """Downloads `name` into `sink` and verifies it: returns its size
        and hash once the content matched the trailer's hash. Raises
        ClientError (integrity mismatch) otherwise; `sink` then holds
        unverified bytes that the caller must discard."""
        check_name(name)
        self._send(encode_get(name), "get")
        answer = self._read_response()
        if not isinstance(answer, GetReady):
            raise self._unexpected("get", "GetReady", answer)
        if answer.offset != 0:
            raise protocol_error(
                "the server announced a body starting at byte %d of %d, expected 0"
                % (answer.offset, answer.size)
            )
        size = answer.size
        if progress is not None:
            progress.start(size)
        hasher = blake3.blake3()
        buf = bytearray(min(CHUNK, max(size, 1)))
        view = memoryview(buf)
        received = 0
        while received < size:
            # Fill the buffer before writing it: fewer, larger writes.
            filled = 0
            want = min(len(buf), size - received)
            while filled < want:
                n = self.recv_into(view[filled:want])
                if n == 0:
                    raise connection_error(
                        "the server closed the connection after %d of %d body bytes"
                        % (received + filled, size)
                    )
                filled += n
            chunk = view[:filled]
            hasher.update(chunk)
            sink.write(chunk)
            received += filled
            if progress is not None:
                progress.advance(filled)
        announced = self._read_trailer()
        digest = hasher.digest()
        if announced != digest:
            raise integrity_error(digest, announced)
        return size, digest

    def list(self, prefix: str) -> Iterator[Entry]:
        """The entries whose names start with `prefix`, as they arrive."""
        self._send(encode_list(prefix), "list")
        received = 0
        while True:
            answer = self._read_response()
            if isinstance(answer, Entry):
                received += 1
                yield answer
            elif isinstance(answer, ListEnd):
                if answer.count != received:
                    raise protocol_error(
                        "the server announced %d entries and sent %d" % (answer.count, received)
                    )
                return
            else:
                raise self._unexpected("list", "Entry or ListEnd", answer)

    def stat(self, name: str) -> Entry:
        check_name(name)
        self._send(encode_stat(name), "stat")
        answer = self._read_response()
        if not isinstance(answer, Entry):
            raise self._unexpected("stat", "Entry", answer)
        return answer

    def delete(self, name: str) -> None:
        check_name(name)
        self._send(encode_delete(name), "delete")
        answer = self._read_response()
        if not isinstance(answer, Deleted):
            raise self._unexpected("delete", "Deleted", answer)


class FileChanged(Exception):
    """The file being uploaded does not hold the announced number of bytes."""

    def __init__(self, announced: int, read: Optional[int]) -> None:
        super().__init__(announced, read)
        self.announced = announced
        self.read = read


def refused(op: str, reply: ErrorReply) -> ClientError:
    exit_code = {
        NOT_FOUND: EXIT_NOT_FOUND,
        ALREADY_EXISTS: EXIT_EXISTS,
        INTEGRITY_MISMATCH: EXIT_INTEGRITY,
    }.get(reply.code, EXIT_REFUSED)
    return ClientError(exit_code, "the server refused the %s: %s" % (op, reply.describe()))


def integrity_error(actual: bytes, expected: bytes) -> ClientError:
    return ClientError(
        EXIT_INTEGRITY,
        "integrity mismatch: the content hashes to %s, the server announced %s"
        % (actual.hex(), expected.hex()),
    )


def _os_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# --- Local files -----------------------------------------------------------------


def local_error(action: str, path: str, error: BaseException) -> ClientError:
    return ClientError(EXIT_LOCAL, "%s %s: %s" % (action, path, _os_message(error)))


def open_source(path: str):
    """Opens a regular file for upload; returns it and its size."""
    try:
        source = open(path, "rb")
    except OSError as e:
        raise local_error("cannot read", path, e) from None
    try:
        info = os.fstat(source.fileno())
    except OSError as e:
        source.close()
        raise local_error("cannot read", path, e) from None
    if stat_module.S_ISDIR(info.st_mode):
        source.close()
        raise ClientError(EXIT_LOCAL, "cannot read %s: is a directory" % path)
    if not stat_module.S_ISREG(info.st_mode):
        source.close()
        raise ClientError(EXIT_LOCAL, "cannot read %s: not a regular file" % path)
    return source, info.st_size


def default_remote_name(path: str) -> Optional[str]:
    """The last component of `path`, as Rust's Path::file_name sees it:
    trailing slashes and `.` components ignored, None for `..`."""
    components = [c for c in path.split("/") if c not in ("", ".")]
    if not components or components[-1] == "..":
        return None
    return components[-1]


def destination(name: str, output: Optional[str]) -> str:
    """Where to save a download of `name` (a valid name): `output`, or
    inside it if it is an existing directory, or ./<last component>."""
    base = name.rsplit("/", 1)[-1]
    if output is None:
        return base
    if os.path.isdir(output):
        return os.path.join(output, base)
    if output.endswith("/"):
        raise ClientError(EXIT_LOCAL, "cannot write to %s: no such directory" % output)
    return output


class Staging:
    """A download's temporary file, next to its destination.

    Created before anything is requested; published by publish() only
    once verified; removed by discard() (or on close) otherwise.
    """

    def __init__(self, dest: str, force: bool) -> None:
        try:
            info = os.lstat(dest)
        except FileNotFoundError:
            info = None
        except OSError as e:
            raise local_error("cannot write to", dest, e) from None
        if info is not None:
            if not force:
                raise ClientError(EXIT_EXISTS, "%s already exists (use --force to replace it)" % dest)
            if stat_module.S_ISDIR(info.st_mode):
                raise ClientError(EXIT_LOCAL, "cannot replace %s: is a directory" % dest)
        self.dest = dest
        self.force = force
        self.dir = os.path.dirname(dest) or "."
        base = os.path.basename(dest)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _ in range(100):
            temp = os.path.join(self.dir, ".%s.%s.part" % (base, secrets.token_hex(3)))
            try:
                # 0666 less the umask: the saved file gets the usual mode.
                fd = os.open(temp, flags, 0o666)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise local_error("cannot create a temporary file in", self.dir, e) from None
        else:
            raise ClientError(EXIT_LOCAL, "cannot create a temporary file in %s" % self.dir)
        self.temp: Optional[str] = temp
        self.file = os.fdopen(fd, "wb")

    def write_error(self, error: BaseException) -> ClientError:
        return local_error("cannot write", self.temp or self.dest, error)

    def publish(self) -> None:
        """Flushes the file to disk and renames it to the destination:
        without force, only if nothing appeared there meanwhile."""
        temp = self.temp
        assert temp is not None
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as e:
            raise self.write_error(e) from None
        try:
            if self.force:
                os.replace(temp, self.dest)
            else:
                os.link(temp, self.dest)
                os.unlink(temp)
        except FileExistsError:
            raise ClientError(
                EXIT_EXISTS, "%s already exists (use --force to replace it)" % self.dest
            ) from None
        except OSError as e:
            raise local_error("cannot save", self.dest, e) from None
        self.temp = None
        try:
            fd = os.open(self.dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise local_error("cannot sync directory", self.dir, e) from None

    def discard(self) -> None:
        """Removes the temporary file, if it was not published."""
        try:
            self.file.close()
        except OSError:
            pass
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except OSError:
                pass
            self.temp = None


class SinkWriter:
    """The temporary file as get() sees it: write errors become local
    file errors, not connection errors."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging

    def write(self, data) -> None:
        try:
            self.staging.file.write(data)
        except OSError as e:
            raise self.staging.write_error(e) from None


# --- Progress ----------------------------------------------------------------------


class Progress:
    """A one-line progress display on stderr, only when it is a terminal.

    Session.put and Session.get call start(total) once the body size is
    known, then advance(n) for every n body bytes moved."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def start(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.shown < 0.1 and self.done < self.total:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-6)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        sys.stderr.write(
            "\r%s: %d/%d bytes (%.0f%%, %.1f MiB/s)"
            % (self.label, self.done, self.total, percent, rate / (1 << 20))
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# --- Commands ----------------------------------------------------------------------


def out_line(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")


def status(quiet: bool, text: str) -> None:
    if not quiet:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def print_entry(entry: Entry) -> None:
    out_line("%d\t%s" % (entry.size, escape(entry.name)))


def text_arg(value: str, what: str) -> str:
    """A command-line argument that must be valid UTF-8 (as clap's String)."""
    if not is_utf8(value):
        raise ClientError(
            EXIT_USAGE, "invalid value %r for %s: not valid UTF-8" % (_printable(value), what)
        )
    return value


def token_from_env() -> Optional[str]:
    token = os.environ.get("FRAMEKIT_TOKEN")
    if not token:
        return None
    if not is_utf8(token):
        raise ClientError(EXIT_USAGE, "$FRAMEKIT_TOKEN is not valid UTF-8")
    return token


# What Rust's str::trim removes: the Unicode White_Space characters.
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def token_from_file(path: str) -> str:
    """The token in a file: its first line that is not blank, trimmed."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(
            EXIT_LOCAL, "cannot read the token file %s: the file is not valid UTF-8" % path
        ) from None
    except OSError as e:
        raise local_error("cannot read the token file", path, e) from None
    for line in text.split("\n"):
        token = line.strip(_WHITESPACE)
        if token:
            return token
    raise ClientError(EXIT_LOCAL, "cannot read the token file %s: the file holds no token" % path)


@dataclass
class Options:
    """How the commands connect: the access token, and TLS if wanted."""

    token: Optional[str]
    tls: Optional[ssl.SSLContext]


def options(args) -> Options:
    """The token (--token-file, else $FRAMEKIT_TOKEN) and the TLS context
    (--tls or --ca), checked before anything else is done."""
    if args.token_file is not None:
        token: Optional[str] = token_from_file(args.token_file)
    else:
        token = token_from_env()
    tls = tls_context(args.ca) if args.tls or args.ca is not None else None
    return Options(token, tls)


def cmd_put(args, opts: Options) -> None:
    source, size = open_source(args.file)
    with source:
        if args.name is not None:
            name = text_arg(args.name, "--name")
        else:
            name = default_remote_name(args.file)
            if name is None or not is_utf8(name):
                raise ClientError(
                    EXIT_REFUSED,
                    "cannot use the file name of %s as a remote name (none, or not UTF-8): "
                    "give one with --name" % _printable(args.file),
                )
        check_name(name)
        with Session.connect(args.server, opts.token, opts.tls) as session:
            progress = Progress(not args.quiet, escape(name))
            try:
                done = session.put(source, size, name, args.force, progress)
            except FileChanged as e:
                read = (
                    "only %d could be read" % e.read if e.read is not None else "more could be read"
                )
                raise ClientError(
                    EXIT_LOCAL,
                    "%s changed while it was sent: %d bytes announced, %s"
                    % (args.file, e.announced, read),
                ) from None
            except OSError as e:
                # Reading the source failed (socket errors are ClientErrors).
                raise local_error("cannot read", args.file, e) from None
            finally:
                progress.finish()
    out_line("put %s: %d bytes, blake3 %s" % (escape(name), done.size, done.hash.hex()))


def cmd_get(args, opts: Options) -> None:
    name = text_arg(args.name, "NAME")
    check_name(name)
    dest = destination(name, args.output)
    staging = Staging(dest, args.force)
    try:
        with Session.connect(args.server, opts.token, opts.tls) as session:
            progress = Progress(not args.quiet, escape(name))
            try:
                size, digest = session.get(name, SinkWriter(staging), progress)
            finally:
                progress.finish()
        staging.publish()
    finally:
        staging.discard()
    status(
        args.quiet,
        "get %s -> %s: %d bytes, blake3 %s" % (escape(name), dest, size, digest.hex()),
    )


def cmd_list(args, opts: Options) -> None:
    prefix = text_arg(args.prefix, "PREFIX")
    with Session.connect(args.server, opts.token, opts.tls) as session:
        for entry in session.list(prefix):
            print_entry(entry)


def cmd_stat(args, opts: Options) -> None:
    name = text_arg(args.name, "NAME")
    check_name(name)
    with Session.connect(args.server, opts.token, opts.tls) as session:
        print_entry(session.stat(name))


def cmd_delete(args, opts: Options) -> None:
    name = text_arg(args.name, "NAME")
    check_name(name)
    with Session.connect(args.server, opts.token, opts.tls) as session:
        session.delete(name)
    status(args.quiet, "deleted %s" % escape(name))


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="ADDR",
        default=argparse.SUPPRESS,
        help="the server's address: HOST:PORT, HOST, or IP (the port defaults to 7878); "
        "default: $FRAMEKIT_SERVER, else 127.0.0.1:7878",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show no progress and no status messages (results and errors are still printed)",
    )
    common.add_argument(
        "--tls",
        action="store_true",
        default=argparse.SUPPRESS,
        help="encrypt the connection with TLS, checking the server's certificate against "
        "the system's trusted roots (or --ca)",
    )
    common.add_argument(
        "--ca",
        metavar="PEM",
        default=argparse.SUPPRESS,
        help="trust the certificates in this PEM file (a private CA, or the server's "
        "self-signed certificate) instead of the system's roots; implies --tls",
    )
    common.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="read the access token from the first non-blank line of this file "
        "(overrides $FRAMEKIT_TOKEN)",
    )
    main_parser = argparse.ArgumentParser(
        prog="framekit_client.py",
        parents=[common],
        description="Send files to a framekit server and fetch them back, verified with BLAKE3.",
        epilog="Environment: FRAMEKIT_SERVER (default for --server), FRAMEKIT_TOKEN "
        "(access token). Exit codes: 0 success, 1 other error, 2 usage error, "
        "3 connection failed/lost/timed out, handshake or TLS failed, 4 remote file not found, "
        "5 already exists, 6 integrity mismatch, 7 refused by the server (busy, unauthorized, "
        "forbidden, ...) or protocol error, 8 local file error.",
    )
    commands = main_parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    put = commands.add_parser("put", parents=[common], help="upload a file")
    put.add_argument("file", metavar="FILE", help="the local file to upload")
    put.add_argument(
        "-n", "--name", metavar="NAME", help="the remote name (default: the file's base name)"
    )
    put.add_argument("-f", "--force", action="store_true", help="replace a remote file of the same name")

    get = commands.add_parser("get", parents=[common], help="download a file")
    get.add_argument("name", metavar="NAME", help="the remote name")
    get.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to save it (default: its base name in the current directory); "
        "an existing directory means inside it",
    )
    get.add_argument("-f", "--force", action="store_true", help="replace an existing local file")

    lst = commands.add_parser("list", parents=[common], help="list remote files")
    lst.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="list only names starting with PREFIX")

    st = commands.add_parser("stat", parents=[common], help="describe one remote file")
    st.add_argument("name", metavar="NAME", help="the remote name")

    delete = commands.add_parser("delete", parents=[common], help="delete a remote file")
    delete.add_argument("name", metavar="NAME", help="the remote name")
    return main_parser


COMMANDS = {
    "put": cmd_put,
    "get": cmd_get,
    "list": cmd_list,
    "stat": cmd_stat,
    "delete": cmd_delete,
}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not hasattr(args, "server"):
        args.server = os.environ.get("FRAMEKIT_SERVER") or "%s:%d" % ("127.0.0.1", DEFAULT_PORT)
    for option, default in (("quiet", False), ("tls", False), ("ca", None), ("token_file", None)):
        if not hasattr(args, option):
            setattr(args, option, default)
    try:
        if blake3 is None:
            raise ClientError(
                EXIT_OTHER, "the blake3 package is missing: install it with `pip install blake3`"
            )
        COMMANDS[args.command](args, options(args))
        sys.stdout.flush()
    except ClientError as e:
        line = e.message.replace("\n", " ").replace("\r", " ")
        sys.stderr.write("error: %s\n" % line)
        return e.exit_code
    except BrokenPipeError:
        # The reader of our output went away (`list | head`): not an error.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
