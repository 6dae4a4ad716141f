//! Which addresses Paddock may connect to on a client's behalf (spec §1.13).
//!
//! Every address a URL resolves to is classified; an address in a refused class is refused
//! unless the operator allowed it (a host name, a CIDR, or all private networks). IPv4-mapped
//! and IPv4-compatible IPv6 forms are judged by the IPv4 address they carry, so
//! `::ffff:127.0.0.1` is loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why an address is refused. The `Display` form is the reason clients and models are given
/// (`address 10.0.0.5 is private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    Unspecified,
    /// RFC 1918 and RFC 4193 (unique local IPv6).
    Private,
    LinkLocal,
    /// RFC 6598 carrier-grade NAT (`100.64.0.0/10`).
    CarrierGradeNat,
    Multicast,
    Broadcast,
    /// RFC 5737 / RFC 3849 documentation ranges.
    Documentation,
    /// Cloud instance metadata services (`169.254.169.254`, `fd00:ec2::254`, …).
    CloudMetadata,
    /// Everything else IANA reserves as not globally reachable: `0.0.0.0/8`, `192.0.0.0/24`,
    /// benchmarking `198.18.0.0/15`, `240.0.0.0/4`, IPv6 discard and translation prefixes.
    Reserved,
}

impl AddressClass {
    fn describe(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CarrierGradeNat => "carrier-grade NAT",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "a documentation address",
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// An address the policy refused, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("address {address} is {}", class.describe())]
pub struct RefusedAddress {
    pub address: IpAddr,
    pub class: AddressClass,
}

/// The class that makes `ip` unfit for outbound requests, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    // Metadata first: 169.254.169.254 is also link-local, and the more specific reason helps.
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(AddressClass::CloudMetadata);
    }
    let class = if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::CarrierGradeNat
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_documentation() {
        AddressClass::Documentation
    } else if a == 0 || a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18)
    {
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0xfd00 && s[1] == 0x0ec2 && s[2..7].iter().all(|&x| x == 0) && s[7] == 0x254 {
        return Some(AddressClass::CloudMetadata);
    }
    let class = if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if (s[0] & 0xfe00) == 0xfc00 {
        AddressClass::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        AddressClass::Documentation
    } else if (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo, ORCHID…)
        || s[0] == 0x2002 // 6to4 carries an arbitrary IPv4 address
        || (s[0] & 0xffc0) == 0xfec0
    // deprecated site-local
    {
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and the NAT64 well-known prefix (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4-compatible.
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(tail);
    }
    None
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd12::/16`), for the operator allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR network (e.g. 10.1.2.0/24, fd00::/8)")]
pub struct InvalidCidr(pub String);

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let shift = width - u32::from(prefix);
    // A shift of the whole width (prefix 0) matches everything; `checked_shr` covers 128.
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
            None => width,
        };
        if prefix > width {
            return Err(invalid());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The operator's exceptions to the refused classes, shared by every outbound feature
/// (attachments, `url` skills, MCP servers). The default allows nothing private.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Host names (case-insensitive, exact) whose addresses are never checked, e.g. an
    /// internal MCP server `mcp.internal`.
    pub allowed_hosts: Vec<String>,
    /// Networks whose addresses are allowed whatever their class.
    pub allowed_networks: Vec<Cidr>,
    /// Allows every private, loopback, link-local and CGNAT address (never cloud metadata,
    /// which only an explicit CIDR allows).
    pub allow_private_networks: bool,
}

impl AddressPolicy {
    /// Whether `host` (a URL's host name) is on the allow-list.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allowed_hosts
            .iter()
            .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(host))
    }

    /// Checks one resolved (or literal) address.
    pub fn check(&self, ip: IpAddr) -> Result<(), RefusedAddress> {
        let Some(class) = classify(ip) else {
            return Ok(());
        };
        if self.allowed_networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        let private_like = matches!(
            class,
            AddressClass::Loopback
                | AddressClass::Private
                | AddressClass::LinkLocal
                | AddressClass::CarrierGradeNat
        );
        if self.allow_private_networks && private_like {
            return Ok(());
        }
        Err(RefusedAddress { address: ip, class })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn refused_classes_cover_the_spec_list() {
        use AddressClass::*;
        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("10.0.0.5", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("100.64.0.1", Some(CarrierGradeNat)),
            ("100.127.255.255", Some(CarrierGradeNat)),
            ("224.0.0.1", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("2001:db8::1", Some(Documentation)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("0.1.2.3", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("2002:7f00:1::", Some(Reserved)),
            // IPv4 inside IPv6 is judged as IPv4.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            // Public.
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (addr, want) in cases {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn the_reason_names_the_address_and_its_class() {
        let policy = AddressPolicy::default();
        let refused = policy.check("10.0.0.5".parse().unwrap()).unwrap_err();
        assert_eq!(refused.to_string(), "address 10.0.0.5 is private");
        let refused = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "address 169.254.169.254 is a cloud metadata address"
        );
    }

    #[test]
    fn operator_exceptions() {
        let policy = AddressPolicy {
            allowed_hosts: vec!["MCP.internal.".to_owned()],
            allowed_networks: vec!["10.1.0.0/16".parse().unwrap(), "fd00::1".parse().unwrap()],
            allow_private_networks: false,
        };
        assert!(policy.host_allowed("mcp.internal"));
        assert!(!policy.host_allowed("other.internal"));
        assert!(policy.check("10.1.200.3".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:10.1.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.2.0.1".parse().unwrap()).is_err());
        assert!(policy.check("fd00::1".parse().unwrap()).is_ok());
        assert!(policy.check("fd00::2".parse().unwrap()).is_err());

        let private = AddressPolicy {
            allow_private_networks: true,
            ..AddressPolicy::default()
        };
        assert!(private.check("192.168.0.10".parse().unwrap()).is_ok());
        assert!(private.check("127.0.0.1".parse().unwrap()).is_ok());
        // Metadata stays refused unless a CIDR names it.
        assert!(private.check("169.254.169.254".parse().unwrap()).is_err());
    }

    #[test]
    fn cidrs_parse_and_refuse_nonsense() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
