//! Behind a reverse proxy every client arrives from the proxy's address.
//! `ELEMENTD_TRUSTED_PROXIES` names the proxies whose forwarding header
//! (`ELEMENTD_FORWARDED_HEADER`: `X-Forwarded-For` by default, or
//! `Forwarded`) is believed; from anyone else it is ignored, so a client
//! cannot pick the address it is counted under. Only the header the proxy
//! writes is read: a proxy passes the other one on as the client sent it.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Forwarded hops read from one request, at most.
const MAX_HOPS: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Trusted {
    nets: Vec<IpNet>,
    /// Read `Forwarded` instead of `X-Forwarded-For`.
    forwarded: bool,
}

impl Trusted {
    /// CIDRs or addresses, and the header the proxies write; Err names
    /// what is neither.
    pub fn parse(list: &[String], header: &str) -> anyhow::Result<Trusted> {
        let forwarded = match header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => false,
            "forwarded" => true,
            other => anyhow::bail!(
                "ELEMENTD_FORWARDED_HEADER: '{other}' is neither x-forwarded-for nor forwarded"
            ),
        };
        let mut nets = Vec::new();
        for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let net = s
                .parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
                .ok_or_else(|| {
                    anyhow::anyhow!("ELEMENTD_TRUSTED_PROXIES: '{s}' is not an address or a CIDR")
                })?;
            nets.push(net);
        }
        Ok(Trusted { nets, forwarded })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client a request comes from: the peer, unless the peer is a
    /// trusted proxy that says whom it forwards for. Then it is the
    /// nearest hop that is not itself a trusted proxy (the ones before it
    /// could be made up by the client).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.nets.is_empty() || !self.contains(peer.ip()) {
            return peer;
        }
        let hops = forwarded_for(headers, self.forwarded);
        let hop = hops
            .iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(hops.first())
            .copied();
        hop.map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hops a request names, nearest last, from the one header the proxy
/// writes. Only the last [`MAX_HOPS`] count (a client may send any number
/// before them), and entries that are no address (`unknown`, obfuscated
/// names) end the list there, as nothing before them is known.
fn forwarded_for(headers: &HeaderMap, forwarded: bool) -> Vec<IpAddr> {
    let values = headers
        .get_all(if forwarded {
            "forwarded"
        } else {
            "x-forwarded-for"
        })
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let raw: Vec<&str> = if forwarded {
        values
            .flat_map(|el| el.split(';'))
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            })
            .collect()
    } else {
        values.map(str::trim).collect()
    };
    let raw = &raw[raw.len().saturating_sub(MAX_HOPS)..];
    let parsed: Vec<Option<IpAddr>> = raw.iter().map(|s| address(s)).collect();
    // Only the unbroken run of addresses nearest the proxy counts.
    let start = parsed
        .iter()
        .rposition(Option::is_none)
        .map_or(0, |i| i + 1);
    parsed[start..]
        .iter()
        .map(|ip| ip.map(canonical))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// `192.0.2.1`, `192.0.2.1:80`, `"[2001:db8::1]:443"` or `2001:db8::1`.
fn address(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_for_its_own_hops() {
        let t = Trusted::parse(
            &["10.0.0.0/8".into(), "192.0.2.7".into()],
            "x-forwarded-for",
        )
        .unwrap();
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 192.0.2.7")]);
        // The nearest hop that is not a proxy; the client's own claim
        // (6.6.6.6) is not taken.
        assert_eq!(t.client(proxy, &xff).ip().to_string(), "203.0.113.5");
        // A client that is no proxy cannot name itself another address.
        assert_eq!(t.client(stranger, &xff), stranger);
        let fwd = headers(&[(
            "forwarded",
            "for=203.0.113.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        // A proxy that writes X-Forwarded-For passes Forwarded on as the
        // client sent it: it is not read.
        assert_eq!(t.client(proxy, &fwd), proxy);
        let tf = Trusted::parse(&["10.0.0.0/8".into()], "Forwarded").unwrap();
        assert_eq!(tf.client(proxy, &fwd).ip().to_string(), "2001:db8:cafe::17");
        // Padding the header does not push the proxy's own hop out.
        let mut long = vec!["6.6.6.6"; 200].join(", ");
        long.push_str(", 203.0.113.9");
        let padded = headers(&[("x-forwarded-for", long.as_str())]);
        assert_eq!(t.client(proxy, &padded).ip().to_string(), "203.0.113.9");
        assert!(Trusted::parse(&[], "x-real-ip").is_err());
        // Something that is no address stops the walk: nothing before it
        // is known.
        let odd = headers(&[("x-forwarded-for", "203.0.113.5, unknown")]);
        assert_eq!(t.client(proxy, &odd), proxy);
        assert_eq!(t.client(proxy, &HeaderMap::new()), proxy);
        assert!(Trusted::parse(&["not-an-address".into()], "x-forwarded-for").is_err());
        assert!(Trusted::default().client(proxy, &xff) == proxy);
    }
}
