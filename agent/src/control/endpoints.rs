//! The host addresses this agent can be reached at: every non-loopback interface
//! address (except the TUN's own and IPv6 link-local ones, which need a scope)
//! paired with the data plane's UDP port.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Interface addresses as `(interface name, address)`, via getifaddrs(3).
pub fn interface_addrs() -> std::io::Result<Vec<(String, IpAddr)>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned and is not freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null; the family says which sockaddr it is.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push((name, ip));
    }
    // SAFETY: head came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Picks the endpoints to report from interface addresses.
pub fn select(
    addrs: &[(String, IpAddr)],
    tun_name: &str,
    overlay: &[IpAddr],
    port: u16,
) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = addrs
        .iter()
        .filter(|(name, _)| name != tun_name)
        .map(|(_, ip)| *ip)
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| !overlay.contains(ip))
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    // IPv4 first: it is what most peers can reach.
    v.sort_by_key(|a| (a.is_ipv6(), *a));
    v.dedup();
    v
}

/// The endpoints of this host right now.
pub fn current(tun_name: &str, overlay: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    match interface_addrs() {
        Ok(a) => select(&a, tun_name, overlay, port),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interface addresses");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_loopback_tun_overlay_and_link_local() {
        let a = vec![
            ("lo".to_string(), "127.0.0.1".parse().unwrap()),
            ("lo".to_string(), "::1".parse().unwrap()),
            ("eth0".to_string(), "10.0.0.5".parse().unwrap()),
            ("eth0".to_string(), "fe80::1".parse().unwrap()),
            ("eth0".to_string(), "2001:db8::5".parse().unwrap()),
            ("zmesh0".to_string(), "100.64.0.7".parse().unwrap()),
            ("other".to_string(), "100.64.0.9".parse().unwrap()),
        ];
        let got = select(&a, "zmesh0", &["100.64.0.9".parse().unwrap()], 51820);
        assert_eq!(
            got,
            vec![
                "10.0.0.5:51820".parse().unwrap(),
                "[2001:db8::5]:51820".parse().unwrap()
            ]
        );
    }

    #[test]
    fn lists_real_interfaces() {
        let a = interface_addrs().unwrap();
        assert!(a.iter().any(|(_, ip)| ip.is_loopback()), "{a:?}");
    }
}
