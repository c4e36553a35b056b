//! Where a webhook may go. A partner names the URL, so without these checks it could make the
//! service POST to its own network: the cloud metadata endpoint (169.254.169.254), the database,
//! another pod. An endpoint is therefore https, carries no credentials in the URL, and every
//! address its host resolves to is public. The syntax is checked when the endpoint is registered
//! (an IP literal or `localhost` is refused at once); the addresses are checked again at every
//! delivery, on the very addresses the delivery then connects to, so a name that re-resolves to
//! a private address between check and connect (DNS rebinding) gains nothing.
//!
//! Two settings loosen this for development and tests only: `allow_http_webhook_targets`
//! (plain http) and `allow_private_webhook_targets` (any address, e.g. a loopback receiver).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// What the service's settings allow beyond public https endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetRules {
    /// Plain `http://` endpoints (development only).
    pub allow_http: bool,
    /// Endpoints on loopback, private, link-local and other non-public addresses (tests only).
    pub allow_private: bool,
}

/// Why an endpoint was refused. Never repeats the URL: it may carry a token in its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL at all.
    NotAUrl,
    /// Not https (or http where allowed).
    Scheme,
    /// A user name or password in the URL.
    Userinfo,
    /// A fragment, which a POST never sends.
    Fragment,
    /// No host, or a host that is not a domain name or IP address.
    NoHost,
    /// A host or resolved address that is not public.
    NotPublic,
    /// The host resolved to no address.
    Unresolved,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAUrl => "must be an absolute https URL",
            Self::Scheme => "must be an https URL",
            Self::Userinfo => "must not carry a user name or password",
            Self::Fragment => "must not carry a fragment",
            Self::NoHost => "must name a host",
            Self::NotPublic => "must be a public address (not loopback, private, link-local, shared, multicast, reserved or documentation)",
            Self::Unresolved => "the host resolves to no address",
        })
    }
}

impl std::error::Error for Refusal {}

impl TargetRules {
    /// Checks `url` as it is registered: its syntax, and its host where that is an IP address or
    /// a loopback name. Returns the parsed URL.
    pub fn check_url(&self, url: &str) -> Result<Url, Refusal> {
        let parsed = Url::parse(url.trim()).map_err(|_| Refusal::NotAUrl)?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(Refusal::Scheme),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refusal::Userinfo);
        }
        if parsed.fragment().is_some() {
            return Err(Refusal::Fragment);
        }
        match parsed.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(Refusal::NoHost);
                }
                if !self.allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                    return Err(Refusal::NotPublic);
                }
            }
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
        }
        Ok(parsed)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(Refusal::NotPublic)
        }
    }

    /// Resolves the host of `url` (checked by [`TargetRules::check_url`]) and checks every
    /// address: all must be public, or the delivery goes nowhere. The addresses returned are the
    /// only ones a delivery may connect to.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refusal> {
        let port = url.port_or_known_default().ok_or(Refusal::NoHost)?;
        let addrs: Vec<SocketAddr> = match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| Refusal::Unresolved)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Refusal::Unresolved);
        }
        for addr in &addrs {
            self.check_ip(addr.ip())?;
        }
        Ok(addrs)
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, fc00::/7),
/// link-local (169.254/16, fe80::/10), shared (CGNAT 100.64/10), unspecified, multicast,
/// broadcast, reserved, benchmarking or documentation; IPv6 that embeds an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is judged by the IPv4 address it embeds.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    // IANA's IPv4 special-purpose registry, less the few globally reachable entries.
    const NOT_PUBLIC: [([u8; 4], u32); 15] = [
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // RFC 1918
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata
        ([172, 16, 0, 0], 12),   // RFC 1918
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // TEST-NET-1
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([192, 168, 0, 0], 16),  // RFC 1918
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // TEST-NET-2
        ([203, 0, 113, 0], 24),  // TEST-NET-3
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
    ];
    !NOT_PUBLIC.iter().any(|(net, bits)| in_v4(ip, *net, *bits))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], bits: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // Embedded IPv4: ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated),
    // 64:ff9b::a.b.c.d (NAT64), judged by the IPv4 address. `::` and `::1` are handled below.
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || (in_v6(ip, [0; 8], 96) && bits > 1)
    {
        return is_public_v4(low32);
    }
    // 6to4 (2002::/16) embeds the IPv4 address in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return is_public_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // Only global unicast (2000::/3) is public, less its special-purpose blocks.
    const NOT_PUBLIC: [([u16; 8], u32); 3] = [
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, ...)
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
    ];
    in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)
        && !NOT_PUBLIC.iter().any(|(net, bits)| in_v6(ip, *net, *bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRICT: TargetRules = TargetRules {
        allow_http: false,
        allow_private: false,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_and_public_ones_pass() {
        for refused in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:0a00:0001::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!is_public(ip(refused)), "{refused} passed");
        }
        for public in [
            "93.184.215.14",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450:4009::200e",
            "::ffff:93.184.215.14",
            "2002:5db8:d70e::1",
        ] {
            assert!(is_public(ip(public)), "{public} refused");
        }
    }

    #[test]
    fn registration_wants_https_without_credentials_and_a_public_literal() {
        assert!(
            STRICT
                .check_url("https://hooks.example.org/tutela?k=v")
                .is_ok()
        );
        for (url, why) in [
            ("http://hooks.example.org/", Refusal::Scheme),
            ("ftp://hooks.example.org/", Refusal::Scheme),
            ("hooks.example.org/x", Refusal::NotAUrl),
            ("https://user:pw@hooks.example.org/", Refusal::Userinfo),
            ("https://user@hooks.example.org/", Refusal::Userinfo),
            ("https://hooks.example.org/#x", Refusal::Fragment),
            ("https://127.0.0.1/", Refusal::NotPublic),
            ("https://[::1]:8443/", Refusal::NotPublic),
            ("https://[::ffff:169.254.169.254]/", Refusal::NotPublic),
            (
                "https://169.254.169.254/latest/meta-data",
                Refusal::NotPublic,
            ),
            ("https://2130706433/", Refusal::NotPublic),
            ("https://0x7f.1/", Refusal::NotPublic),
            ("https://localhost/", Refusal::NotPublic),
            ("https://LOCALHOST./", Refusal::NotPublic),
            ("https://api.localhost/", Refusal::NotPublic),
        ] {
            assert_eq!(STRICT.check_url(url).unwrap_err(), why, "{url}");
        }
        let dev = TargetRules {
            allow_http: true,
            allow_private: true,
        };
        assert!(dev.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(dev.check_url("https://localhost/").is_ok());
        assert_eq!(
            dev.check_url("http://u@127.0.0.1/").unwrap_err(),
            Refusal::Userinfo
        );
    }

    #[tokio::test]
    async fn delivery_resolves_and_checks_every_address() {
        let url = Url::parse("http://localhost:9/").unwrap();
        let dev = TargetRules {
            allow_http: true,
            allow_private: true,
        };
        let addrs = dev.resolve(&url).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        let http_only = TargetRules {
            allow_http: true,
            allow_private: false,
        };
        assert_eq!(
            http_only.resolve(&url).await.unwrap_err(),
            Refusal::NotPublic
        );
        let literal = Url::parse("https://10.0.0.1/").unwrap();
        assert_eq!(
            STRICT.resolve(&literal).await.unwrap_err(),
            Refusal::NotPublic
        );
    }

    proptest! {
        #[test]
        fn every_mapped_address_is_judged_as_its_ipv4(a: u8, b: u8, c: u8, d: u8) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            prop_assert_eq!(is_public(IpAddr::V6(v4.to_ipv6_mapped())), is_public(IpAddr::V4(v4)));
        }

        #[test]
        fn no_private_or_loopback_ipv4_is_public(x: u32) {
            let v4 = Ipv4Addr::from(x);
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast()
                || v4.is_broadcast() || v4.is_unspecified() || v4.is_documentation() {
                prop_assert!(!is_public(IpAddr::V4(v4)));
            }
        }
    }
}
