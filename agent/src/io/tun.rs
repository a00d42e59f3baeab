//! The TUN device: opened through /dev/net/tun ioctls with IFF_TUN|IFF_NO_PI and, when
//! the kernel allows, IFF_VNET_HDR with checksum and TSO offloads so one read returns a
//! whole TCP burst (up to 64 KB) instead of one packet. Addresses, routes and MTU are set
//! with iproute2. Closing the descriptor deletes the device (it is not persistent).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context};
use ipnet::{Ipv4Net, Ipv6Net};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct Tun {
    fd: OwnedFd,
    pub name: String,
    /// Packets carry a `virtio_net_hdr` (and reads may be TSO super-packets).
    pub vnet: bool,
}

impl Tun {
    /// Opens (creates) the device `name`. Tries offloads first and falls back to a plain
    /// TUN if the kernel refuses them.
    pub fn open(name: &str) -> anyhow::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            bail!("invalid TUN device name {name:?}");
        }
        match Self::open_with(name, true) {
            Ok(t) => Ok(t),
            Err(e) => {
                tracing::warn!(error = %e, "TUN offloads unavailable, using a plain TUN");
                Self::open_with(name, false)
            }
        }
    }

    fn open_with(name: &str, vnet: bool) -> anyhow::Result<Tun> {
        let path = CString::new("/dev/net/tun").expect("static path");
        // SAFETY: plain open(2) of a NUL-terminated path.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("open /dev/net/tun");
        }
        // SAFETY: raw is a freshly opened descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        if vnet {
            req.flags |= IFF_VNET_HDR;
        }
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
        if unsafe { libc::ioctl(raw, TUNSETIFF as _, &mut req as *mut IfReq) } < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
        }
        if vnet {
            let sz: libc::c_int = super::offload::VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
            if unsafe { libc::ioctl(raw, TUNSETVNETHDRSZ as _, &sz as *const libc::c_int) } < 0 {
                return Err(io::Error::last_os_error()).context("TUNSETVNETHDRSZ");
            }
            let off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
            // SAFETY: TUNSETOFFLOAD takes the flags by value.
            if unsafe { libc::ioctl(raw, TUNSETOFFLOAD as _, off as libc::c_ulong) } < 0 {
                return Err(io::Error::last_os_error()).context("TUNSETOFFLOAD");
            }
        }
        Ok(Tun {
            fd,
            name: name.to_string(),
            vnet,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::write(self.raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sets MTU, overlay addresses and routes, and brings the link up.
    pub fn configure(
        &self,
        mtu: u16,
        v4: std::net::Ipv4Addr,
        v6: std::net::Ipv6Addr,
        net4: Ipv4Net,
        net6: Ipv6Net,
    ) -> anyhow::Result<()> {
        let dev = self.name.as_str();
        ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string(), "up"])?;
        ip(&["addr", "replace", &format!("{v4}/32"), "dev", dev])?;
        ip(&["route", "replace", &net4.trunc().to_string(), "dev", dev])?;
        // IPv6 may be disabled in this namespace or system; the v4 overlay still works.
        if let Err(e) = ip(&[
            "-6",
            "addr",
            "replace",
            &format!("{v6}/128"),
            "dev",
            dev,
            "nodad",
        ])
        .and_then(|_| {
            ip(&[
                "-6",
                "route",
                "replace",
                &net6.trunc().to_string(),
                "dev",
                dev,
            ])
        }) {
            tracing::warn!(error = %e, "IPv6 overlay not configured");
        }
        Ok(())
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    super::netcfg::run("ip", args)
}
