//! The one UDP socket, with batched I/O: `recvmmsg` (plus UDP GRO, so one message may
//! hold many same-size datagrams) and `sendmmsg` (plus UDP GSO: a run of same-size
//! datagrams to one destination leaves as one message with a UDP_SEGMENT cmsg). Each
//! offload falls back to plain batching when the kernel refuses it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::Context;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
const SOCK_BUF: usize = 8 << 20;
/// Receive buffer per message: room for a full GRO batch.
pub const RECV_BUF: usize = 65536;
/// Most datagrams the kernel accepts in one GSO send, and their total size.
const GSO_MAX_SEGS: usize = 64;
const GSO_MAX_BYTES: usize = 65000;
const CMSG_SPACE: usize = 64;

pub struct Udp {
    sock: Socket,
    v6: bool,
    gso: bool,
    gro: bool,
    local: SocketAddr,
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as _,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Udp {
    /// Binds `[::]:port` dual-stack (or `0.0.0.0:port` if IPv6 is unavailable).
    pub fn bind(port: u16) -> anyhow::Result<Udp> {
        let (sock, v6) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_only_v6(false).context("IPV6_V6ONLY")?;
                match s.bind(&SockAddr::from(SocketAddr::from(([0u16; 8], port)))) {
                    Ok(()) => (s, true),
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => Self::v4_socket(port)?,
                    Err(e) => return Err(e).with_context(|| format!("bind UDP port {port}")),
                }
            }
            Err(_) => Self::v4_socket(port)?,
        };
        let fd = sock.as_raw_fd();
        // Large buffers absorb bursts; the FORCE variants exceed rmem_max when root.
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCK_BUF as _).is_err() {
            let _ = sock.set_send_buffer_size(SOCK_BUF);
        }
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCK_BUF as _).is_err() {
            let _ = sock.set_recv_buffer_size(SOCK_BUF);
        }
        // Marked, so that with an exit node in use the tunnel's own packets keep taking
        // the underlay (policy routing sends marked traffic to the main table).
        if setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            super::netcfg::FWMARK as _,
        )
        .is_err()
        {
            tracing::debug!("cannot mark the UDP socket (no CAP_NET_ADMIN); exit nodes need it");
        }
        let gro = setsockopt_int(fd, SOL_UDP, UDP_GRO, 1).is_ok();
        let local = sock.local_addr()?.as_socket().context("local address")?;
        tracing::debug!(%local, gro, "UDP socket bound");
        Ok(Udp {
            sock,
            v6,
            gso: true,
            gro,
            local,
        })
    }

    fn v4_socket(port: u16) -> anyhow::Result<(Socket, bool)> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.bind(&SockAddr::from(SocketAddr::from(([0u8; 4], port))))
            .with_context(|| format!("bind UDP port {port}"))?;
        Ok((s, false))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn offloads(&self) -> (bool, bool) {
        (self.gso, self.gro)
    }

    fn to_os(&self, a: SocketAddr) -> SockAddr {
        match a {
            SocketAddr::V4(v4) if self.v6 => {
                SockAddr::from(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            a => SockAddr::from(a),
        }
    }

    /// One datagram, blocking (control traffic: handshakes, keepalives).
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(data, &self.to_os(dst))
    }
}

/// A batch of received messages; each may hold several datagrams of `seg` bytes (GRO).
pub struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u8; CMSG_SPACE]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside only ever point into the batch's own buffers, which
// move with it; they are rebuilt before every use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![0u8; n * RECV_BUF],
            // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid values.
            names: vec![unsafe { zeroed() }; n],
            cmsgs: vec![[0u8; CMSG_SPACE]; n],
            iovs: vec![unsafe { zeroed() }; n],
            msgs: vec![unsafe { zeroed() }; n],
        }
    }

    /// Message `i` of the last receive: (source, bytes, segment size).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8], usize)> {
        let m = self.msgs.get(i)?;
        let len = m.msg_len as usize;
        let data = &self.bufs[i * RECV_BUF..i * RECV_BUF + len.min(RECV_BUF)];
        // SAFETY: names[i] was filled by the kernel with msg_namelen bytes.
        let addr = unsafe { SockAddr::new(self.names[i], m.msg_hdr.msg_namelen) };
        let from = addr.as_socket()?;
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let mut seg = len;
        // SAFETY: walking the control buffer the kernel filled, bounded by msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    if v > 0 {
                        seg = v as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
            }
        }
        Some((from, data, seg.max(1)))
    }
}

impl Udp {
    /// Receives up to a batch of messages without blocking. Ok(0) when nothing waits.
    pub fn recv_batch(&self, b: &mut RecvBatch) -> io::Result<usize> {
        let n = b.msgs.len();
        for i in 0..n {
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[i * RECV_BUF..].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut b.msgs[i].msg_hdr;
            h.msg_name = (&mut b.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = b.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = if self.gro { CMSG_SPACE as _ } else { 0 };
            h.msg_flags = 0;
            b.msgs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `b` and sized as declared.
        let r = unsafe {
            libc::recvmmsg(
                self.raw_fd(),
                b.msgs.as_mut_ptr(),
                n as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }
}

/// Outgoing datagrams, each encrypted straight into its slot; flushed with `sendmmsg`.
pub struct SendBatch {
    buf: Vec<u8>,
    stride: usize,
    lens: Vec<usize>,
    dsts: Vec<SocketAddr>,
    cap: usize,
    // scratch for flush, preallocated so pointers stay valid while building
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    cmsgs: Vec<[u8; CMSG_SPACE]>,
    msgs: Vec<libc::mmsghdr>,
    runs: Vec<(usize, usize)>,
}

// SAFETY: as for RecvBatch, the raw pointers only point into the batch's own buffers.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(cap: usize, stride: usize) -> SendBatch {
        SendBatch {
            buf: vec![0u8; cap * stride],
            stride,
            lens: Vec::with_capacity(cap),
            dsts: Vec::with_capacity(cap),
            cap,
            // SAFETY: all-zero iovec / mmsghdr are valid values.
            iovs: vec![unsafe { zeroed() }; cap],
            names: Vec::with_capacity(cap),
            cmsgs: vec![[0u8; CMSG_SPACE]; cap],
            msgs: vec![unsafe { zeroed() }; cap],
            runs: Vec::with_capacity(cap),
        }
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() >= self.cap
    }

    /// The next free slot, to encrypt into.
    pub fn slot(&mut self) -> &mut [u8] {
        let i = self.lens.len();
        &mut self.buf[i * self.stride..(i + 1) * self.stride]
    }

    /// Keeps the slot just written: `len` bytes for `dst`.
    pub fn commit(&mut self, dst: SocketAddr, len: usize) {
        self.lens.push(len);
        self.dsts.push(dst);
    }

    /// Sends everything queued. Errors for single messages are logged and skipped (UDP
    /// is lossy anyway); a kernel refusing GSO turns GSO off for the socket.
    pub fn flush(&mut self, udp: &mut Udp) {
        if self.lens.is_empty() {
            return;
        }
        for _attempt in 0..2 {
            match self.try_flush(udp) {
                Ok(()) => break,
                Err(e)
                    if udp.gso
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                        ) =>
                {
                    tracing::warn!(error = %e, "UDP GSO refused, falling back to plain sendmmsg");
                    udp.gso = false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sendmmsg failed, batch dropped");
                    break;
                }
            }
        }
        self.lens.clear();
        self.dsts.clear();
    }

    fn try_flush(&mut self, udp: &Udp) -> io::Result<()> {
        let n = self.lens.len();
        // Runs: consecutive datagrams to one destination, all of one size except maybe
        // the last (the UDP GSO rule), within the kernel's segment and size limits.
        self.runs.clear();
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            if udp.gso {
                let (seg, mut total) = (self.lens[i], self.lens[i]);
                while j < n
                    && j - i < GSO_MAX_SEGS
                    && self.dsts[j] == self.dsts[i]
                    && self.lens[j] <= seg
                    && total + self.lens[j] <= GSO_MAX_BYTES
                {
                    total += self.lens[j];
                    j += 1;
                    if self.lens[j - 1] < seg {
                        break;
                    }
                }
            }
            self.runs.push((i, j));
            i = j;
        }
        for k in 0..n {
            self.iovs[k] = libc::iovec {
                iov_base: self.buf[k * self.stride..].as_mut_ptr().cast(),
                iov_len: self.lens[k],
            };
        }
        self.names.clear();
        for &(a, _) in &self.runs {
            self.names.push(udp.to_os(self.dsts[a]));
        }
        for (r, &(a, b)) in self.runs.iter().enumerate() {
            // SAFETY: zeroed mmsghdr is valid; pointers below point into self's buffers.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = self.names[r].as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = self.names[r].len();
            m.msg_hdr.msg_iov = &mut self.iovs[a];
            m.msg_hdr.msg_iovlen = (b - a) as _;
            if b - a > 1 {
                let c = &mut self.cmsgs[r];
                c.fill(0);
                m.msg_hdr.msg_control = c.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE/LEN are pure size computations.
                m.msg_hdr.msg_controllen =
                    unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
                // SAFETY: the control buffer is CMSG_SPACE bytes, enough for one u16 cmsg.
                unsafe {
                    let h = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                    (*h).cmsg_level = SOL_UDP;
                    (*h).cmsg_type = UDP_SEGMENT;
                    (*h).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(h) as *mut u16, self.lens[a] as u16);
                }
            }
            self.msgs[r] = m;
        }
        let total = self.runs.len();
        let mut sent = 0;
        while sent < total {
            // SAFETY: msgs[sent..total] are fully initialised headers into live buffers.
            let r = unsafe {
                libc::sendmmsg(
                    udp.raw_fd(),
                    self.msgs[sent..].as_mut_ptr(),
                    (total - sent) as _,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if udp.gso && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                    // Retried without GSO; datagrams already sent again are harmless
                    // (the receiver's replay window drops the duplicates).
                    return Err(e);
                }
                // Skip the message the kernel choked on (e.g. unreachable destination).
                tracing::trace!(error = %e, "datagram dropped on send");
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
        Ok(())
    }
}
