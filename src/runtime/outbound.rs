//! Where driven links may connect (issue 8, SSRF). A member sets `url`;
//! without a check elementd would connect for them to loopback, the
//! cloud metadata service or anything else on the operator's network.
//!
//! Special-purpose addresses (loopback, private, link-local, CGNAT, ULA,
//! multicast, … and IPv6 forms that embed them) are refused unless
//! `ELEMENTD_OUTBOUND_ALLOW` names their network (CIDR) or the URL's host
//! name. The link resolves the host itself, checks every address, and
//! connects to an address it checked, so a name that resolves differently
//! the second time (DNS rebinding) gains nothing.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::{Host, Url};

/// The operator's allow-list (networks and host names), and how many
/// driven links one circle may hold.
#[derive(Debug, Clone)]
pub struct Outbound {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
    pub max_links_per_circle: usize,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            nets: Vec::new(),
            hosts: Vec::new(),
            max_links_per_circle: crate::config::Limits::default().max_driven_links_per_circle,
        }
    }
}

const V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

const V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique local (ULA)"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Why `ip` is not a public destination; None when it is.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(ip) => V4.iter().find(|(n, _)| n.contains(&ip)).map(|(_, w)| *w),
        IpAddr::V6(ip) => {
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4
            // address that a gateway will reach: judge that one.
            let s = ip.segments();
            let embedded = match s {
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some((hi, lo)),
                [0x2002, hi, lo, ..] => Some((hi, lo)),
                _ => None,
            };
            if let Some((hi, lo)) = embedded {
                let v4 = Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
                return special(IpAddr::V4(v4));
            }
            V6.iter().find(|(n, _)| n.contains(&ip)).map(|(_, w)| *w)
        }
    }
}

impl Outbound {
    /// Parses `ELEMENTD_OUTBOUND_ALLOW` entries: CIDRs, single addresses
    /// or host names.
    pub fn parse(entries: &[String]) -> anyhow::Result<Outbound> {
        let mut out = Outbound::default();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = e.parse::<IpNet>() {
                out.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else if let Ok(Host::Domain(d)) = Host::parse(e) {
                out.hosts.push(d.to_ascii_lowercase());
            } else {
                anyhow::bail!(
                    "ELEMENTD_OUTBOUND_ALLOW: '{e}' is neither a CIDR, an address nor a host name"
                );
            }
        }
        Ok(out)
    }

    fn allows_host(&self, host: &Host<&str>) -> bool {
        matches!(host, Host::Domain(d) if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(d)))
    }

    /// Why `ip` may not be reached; None when it may.
    fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if self.nets.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        special(ip)
    }

    fn refused(shown: &str, why: &str) -> String {
        format!(
            "destination {shown} is not allowed: {why}; an operator can allow it with ELEMENTD_OUTBOUND_ALLOW"
        )
    }

    /// The addresses a link to `url` may connect to: every address the
    /// host resolves to that the policy allows. An error says why none;
    /// it names `shown` (the url as written) instead of the host or its
    /// addresses when a sensitive value made the host.
    pub async fn destinations(
        &self,
        url: &Url,
        shown: Option<&str>,
    ) -> Result<Vec<SocketAddr>, String> {
        let host = url.host().ok_or_else(|| match shown {
            Some(t) => format!("url '{t}' has no host"),
            None => format!("url '{url}' has no host"),
        })?;
        let port = url.port_or_known_default().ok_or_else(|| match shown {
            Some(t) => format!("url '{t}' has no port"),
            None => format!("url '{url}' has no port"),
        })?;
        let named = |host: &dyn std::fmt::Display| match shown {
            Some(t) => format!("the host of {t}"),
            None => host.to_string(),
        };
        let addrs: Vec<SocketAddr> = match &host {
            Host::Ipv4(ip) => vec![SocketAddr::new((*ip).into(), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new((*ip).into(), port)],
            Host::Domain(d) => tokio::net::lookup_host((*d, port))
                .await
                .map_err(|e| format!("cannot resolve {}: {e}", named(d)))?
                .collect(),
        };
        if self.allows_host(&host) {
            return Ok(addrs);
        }
        let (ok, refused): (Vec<_>, Vec<_>) = addrs
            .into_iter()
            .partition(|a| self.refusal(a.ip()).is_none());
        match (ok.is_empty(), refused.first()) {
            (true, Some(a)) => {
                let shown = match (&host, shown) {
                    (_, Some(t)) => format!("the host of {t}"),
                    (Host::Domain(d), None) => format!("{d} ({})", a.ip()),
                    (_, None) => a.ip().to_string(),
                };
                Err(Self::refused(&shown, self.refusal(a.ip()).unwrap_or("")))
            }
            (true, None) => Err(format!("{} resolves to no address", named(&host))),
            (false, _) => Ok(ok),
        }
    }

    /// The verdict that needs no network: for an address literal, or a
    /// `localhost` name (which always means loopback). None when allowed
    /// or when only resolving the name can tell.
    pub fn check_without_network(&self, url: &str) -> Option<String> {
        let url = Url::parse(url).ok()?;
        let host = url.host()?;
        if self.allows_host(&host) {
            return None;
        }
        let (ip, shown) = match host {
            Host::Ipv4(ip) => (IpAddr::from(ip), ip.to_string()),
            Host::Ipv6(ip) => (IpAddr::from(ip), ip.to_string()),
            Host::Domain(d) if d == "localhost" || d.ends_with(".localhost") => (
                IpAddr::from(Ipv4Addr::LOCALHOST),
                format!("{d} (127.0.0.1)"),
            ),
            Host::Domain(_) => return None,
        };
        self.refusal(ip).map(|why| Self::refused(&shown, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_named() {
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private (RFC 1918)"),
            ("10.0.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("fd00::1", "unique local (ULA)"),
            ("0.0.0.0", "unspecified (\"this network\")"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a00:1::", "private (RFC 1918)"),
            ("::7f00:1", "IPv4-compatible (deprecated)"),
        ] {
            assert_eq!(special(ip(addr)), Some(why), "{addr}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert_eq!(special(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn the_allow_list_opens_networks_and_names() {
        let o = Outbound::parse(&[
            "127.0.0.0/8".into(),
            " 10.1.2.3 ".into(),
            "Feed.Internal".into(),
        ])
        .unwrap();
        assert_eq!(o.refusal(ip("127.0.0.1")), None);
        assert_eq!(o.refusal(ip("::ffff:127.0.0.1")), None, "mapped forms too");
        assert_eq!(o.refusal(ip("10.1.2.3")), None);
        assert_eq!(o.refusal(ip("10.1.2.4")), Some("private (RFC 1918)"));
        assert_eq!(o.refusal(ip("::1")), Some("loopback"));
        assert!(o
            .check_without_network("ws://feed.internal:9000/")
            .is_none());
        for bad in ["10.0.0.0/33", "not a host", "a/b"] {
            assert!(Outbound::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn literals_are_judged_without_network() {
        let o = Outbound::default();
        let why = o.check_without_network("ws://127.0.0.1:9/").unwrap();
        assert_eq!(
            why,
            "destination 127.0.0.1 is not allowed: loopback; an operator can allow it with ELEMENTD_OUTBOUND_ALLOW"
        );
        // The URL parser's forms of an address are the address.
        assert!(o.check_without_network("ws://2130706433/").is_some());
        assert!(o.check_without_network("ws://[::ffff:7f00:1]/").is_some());
        assert!(o.check_without_network("ws://localhost:80/").is_some());
        assert!(o.check_without_network("wss://example.com/").is_none());
    }

    #[tokio::test]
    async fn destinations_are_checked_before_any_connection() {
        let o = Outbound::default();
        let url = Url::parse("ws://127.0.0.1:9/").unwrap();
        assert!(o
            .destinations(&url, None)
            .await
            .unwrap_err()
            .contains("loopback"));
        let url = Url::parse("ws://localhost:9/").unwrap();
        assert!(o
            .destinations(&url, None)
            .await
            .unwrap_err()
            .contains("localhost ("));
        // A host a secret made is named by the url as written, never by
        // its own text or its addresses.
        let why = o
            .destinations(&url, Some("ws://{{ vars.h }}:9/"))
            .await
            .unwrap_err();
        assert!(why.contains("the host of ws://{{ vars.h }}:9/"), "{why}");
        assert!(
            !why.contains("localhost") && !why.contains("127.0.0.1"),
            "{why}"
        );
        let open = Outbound::parse(&["127.0.0.0/8".into()]).unwrap();
        let url = Url::parse("ws://127.0.0.1:9/").unwrap();
        assert_eq!(
            open.destinations(&url, None).await.unwrap(),
            vec!["127.0.0.1:9".parse().unwrap()]
        );
    }
}
