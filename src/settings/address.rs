//! Hosts and addresses, for the rules on where a SIP header may send a
//! call: the special-purpose ranges a caller must not reach ([`classify`]),
//! CIDR blocks ([`Cidr`]), a URI's host and port ([`split_authority`],
//! [`host_problem`]), and the host names an IPv4 parser would read as an
//! address in a form other than the dotted quad ([`non_canonical_ipv4`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest host name DNS allows; longer ones are refused before any matching.
pub const MAX_HOST_NAME_BYTES: usize = 253;

/// A range a URI from a SIP header may not reach unless `allowed-hosts` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialRange {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), fc00::/7, and the deprecated site-local fec0::/10.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 169.254.169.254 and fd00:ec2::254: where cloud instances read their credentials.
    CloudMetadata,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    Shared,
    /// 0.0.0.0/8 and :: (Linux reaches the host itself through 0.0.0.0).
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 240.0.0.0/4, the broadcast address 255.255.255.255 among them.
    Reserved,
}

impl SpecialRange {
    fn words(self) -> &'static str {
        match self {
            SpecialRange::Loopback => "loopback",
            SpecialRange::Private => "private",
            SpecialRange::LinkLocal => "link-local",
            SpecialRange::CloudMetadata => "cloud metadata",
            SpecialRange::Shared => "shared (carrier-grade NAT)",
            SpecialRange::Unspecified => "unspecified",
            SpecialRange::Multicast => "multicast",
            SpecialRange::Reserved => "reserved or broadcast",
        }
    }
}

/// An address in a [`SpecialRange`], directly or as the IPv4 address an
/// IPv6 one carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Special {
    pub range: SpecialRange,
    /// How an IPv6 address carries the IPv4 one that is special, if it does.
    pub carried: Option<&'static str>,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = self.range.words();
        match self.carried {
            None => {
                let article = if words.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                write!(f, "{article} {words} address")
            }
            Some(form) => write!(f, "the {form} form of a {words} address"),
        }
    }
}

/// The special range `address` is in, or None for an ordinary (public) one.
pub fn classify(address: IpAddr) -> Option<Special> {
    let direct = |range: Option<SpecialRange>| range.map(|range| Special { range, carried: None });
    match address {
        IpAddr::V4(v4) => direct(classify_v4(v4)),
        IpAddr::V6(v6) => match carried_ipv4(v6) {
            Some((v4, form)) => classify_v4(v4).map(|range| Special { range, carried: Some(form) }),
            None => direct(classify_v6(v6)),
        },
    }
}

fn in_block(address: u32, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    address & mask == u32::from_be_bytes(network) & mask
}

fn classify_v4(address: Ipv4Addr) -> Option<SpecialRange> {
    let bits = u32::from(address);
    let blocks: [([u8; 4], u32, SpecialRange); 10] = [
        ([169, 254, 169, 254], 32, SpecialRange::CloudMetadata),
        ([0, 0, 0, 0], 8, SpecialRange::Unspecified),
        ([127, 0, 0, 0], 8, SpecialRange::Loopback),
        ([10, 0, 0, 0], 8, SpecialRange::Private),
        ([172, 16, 0, 0], 12, SpecialRange::Private),
        ([192, 168, 0, 0], 16, SpecialRange::Private),
        ([169, 254, 0, 0], 16, SpecialRange::LinkLocal),
        ([100, 64, 0, 0], 10, SpecialRange::Shared),
        ([224, 0, 0, 0], 4, SpecialRange::Multicast),
        ([240, 0, 0, 0], 4, SpecialRange::Reserved),
    ];
    blocks.iter().find(|(network, prefix, _)| in_block(bits, *network, *prefix)).map(|(_, _, range)| *range)
}

fn classify_v6(address: Ipv6Addr) -> Option<SpecialRange> {
    let first = address.segments()[0];
    match address {
        _ if address.is_unspecified() => Some(SpecialRange::Unspecified),
        _ if address.is_loopback() => Some(SpecialRange::Loopback),
        _ if address == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => Some(SpecialRange::CloudMetadata),
        _ if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => Some(SpecialRange::Private),
        _ if first & 0xffc0 == 0xfe80 => Some(SpecialRange::LinkLocal),
        _ if first & 0xff00 == 0xff00 => Some(SpecialRange::Multicast),
        _ => None,
    }
}

/// The IPv4 address an IPv6 one stands for, and how: IPv4-mapped
/// (::ffff:0:0/96), NAT64 (64:ff9b::/96) or the old IPv4-compatible (::/96).
fn carried_ipv4(address: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let segments = address.segments();
    let tail = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
    match segments[..6] {
        [0, 0, 0, 0, 0, 0xffff] => Some((tail, "IPv4-mapped")),
        [0x64, 0xff9b, 0, 0, 0, 0] => Some((tail, "NAT64")),
        // :: and ::1 are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0] if !address.is_unspecified() && !address.is_loopback() => Some((tail, "IPv4-compatible")),
        _ => None,
    }
}

/// An address block, `10.0.0.0/8` or `fc00::/7`; a single address is a
/// block of one. IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `address/prefix`, or an address alone. Bits past the prefix are
    /// dropped (`192.168.1.7/24` is `192.168.1.0/24`).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| format!("'{text}': not an IP address or CIDR block"))?;
        let address = address.to_canonical();
        let longest = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => longest,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= longest && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("'{text}': the prefix length must be 0 to {longest}"))?,
        };
        Ok(Cidr { network: masked(address, prefix), prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.network.is_ipv4() && masked(address, self.prefix) == self.network
    }
}

fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A label an IPv4 parser (`inet_aton`, a browser's) reads as a number:
/// decimal, octal with a leading 0, or hex with 0x.
fn numeric_label(label: &str) -> bool {
    let digits = label.strip_prefix("0x").or_else(|| label.strip_prefix("0X"));
    match digits {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// True when `host` would be read as an IPv4 address (its last label is a
/// number) but is not one in canonical form, four decimal parts of 0 to 255
/// without leading zeros: `2130706433`, `127.1`, `0x7f.1`, `0177.0.0.1`,
/// `127.0.0.1.` and `1.2.3.256` all are.
pub fn non_canonical_ipv4(host: &str) -> bool {
    let last = host.strip_suffix('.').unwrap_or(host).rsplit('.').next().unwrap_or_default();
    numeric_label(last) && host.parse::<Ipv4Addr>().is_err()
}

/// An authority's host, its port if given, and whether the host was in
/// brackets (an IPv6 address, checked here).
pub fn split_authority(authority: &str) -> Result<(&str, Option<&str>, bool), &'static str> {
    let Some(bracketed) = authority.strip_prefix('[') else {
        return Ok(match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (authority, None, false),
        });
    };
    let (host, after) = bracketed.split_once(']').ok_or("unclosed IPv6 bracket")?;
    let port = match after {
        "" => None,
        _ => Some(after.strip_prefix(':').ok_or("junk after IPv6 address")?),
    };
    if host.parse::<Ipv6Addr>().is_err() {
        return Err("bad IPv6 address");
    }
    Ok((host, port, true))
}

/// Why `host`, as a URI's authority gives it (`bracketed`: an IPv6 address
/// in brackets, checked already), cannot be a server's host: it is empty,
/// over 253 characters, has a character no host name has, or is an IPv4
/// address in a form other than the dotted quad.
pub fn host_problem(host: &str, bracketed: bool) -> Option<String> {
    if host.is_empty() {
        return Some("no host".into());
    }
    if host.len() > MAX_HOST_NAME_BYTES {
        return Some(format!("the host name is over {MAX_HOST_NAME_BYTES} characters"));
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')) {
        return Some("bad host name".into());
    }
    if !bracketed && non_canonical_ipv4(host) {
        return Some(format!(
            "{host} is not an IPv4 address in canonical form (four decimal numbers 0 to 255, no leading zeros, as \
             in 127.0.0.1); decimal, octal, hex and short forms are refused"
        ));
    }
    None
}

/// True when `host` reads as an IPv4 address, canonical or not.
pub fn looks_like_ipv4(host: &str) -> bool {
    let last = host.strip_suffix('.').unwrap_or(host).rsplit('.').next().unwrap_or_default();
    numeric_label(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_of(text: &str) -> Option<SpecialRange> {
        classify(text.parse().unwrap()).map(|special| special.range)
    }

    #[test]
    fn every_special_ipv4_range_is_classified_at_both_ends() {
        use SpecialRange::*;
        for (first, last, range) in [
            ("0.0.0.0", "0.255.255.255", Unspecified),
            ("127.0.0.0", "127.255.255.255", Loopback),
            ("10.0.0.0", "10.255.255.255", Private),
            ("172.16.0.0", "172.31.255.255", Private),
            ("192.168.0.0", "192.168.255.255", Private),
            ("169.254.0.0", "169.254.255.255", LinkLocal),
            ("100.64.0.0", "100.127.255.255", Shared),
            ("224.0.0.0", "239.255.255.255", Multicast),
            ("240.0.0.0", "255.255.255.255", Reserved),
        ] {
            assert_eq!(range_of(first), Some(range), "{first}");
            assert_eq!(range_of(last), Some(range), "{last}");
        }
        assert_eq!(range_of("169.254.169.254"), Some(CloudMetadata));
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "223.255.255.255",
            "93.184.216.34",
        ] {
            assert_eq!(range_of(public), None, "{public}");
        }
    }

    #[test]
    fn every_special_ipv6_range_is_classified() {
        use SpecialRange::*;
        for (text, range) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::", Private),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("fe80::", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("fd00:ec2::254", CloudMetadata),
        ] {
            assert_eq!(range_of(text), Some(range), "{text}");
        }
        for public in ["2001:db8::1", "2606:4700::1111", "fbff::1", "fe00::1", "::2:0:0:1"] {
            assert_eq!(range_of(public), None, "{public}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_classified_as_what_they_carry() {
        for (text, range, form) in [
            ("::ffff:127.0.0.1", SpecialRange::Loopback, "IPv4-mapped"),
            ("::ffff:7f00:1", SpecialRange::Loopback, "IPv4-mapped"),
            ("::ffff:10.1.2.3", SpecialRange::Private, "IPv4-mapped"),
            ("::ffff:169.254.169.254", SpecialRange::CloudMetadata, "IPv4-mapped"),
            ("::ffff:100.64.0.1", SpecialRange::Shared, "IPv4-mapped"),
            ("::ffff:0.0.0.0", SpecialRange::Unspecified, "IPv4-mapped"),
            ("::ffff:224.0.0.1", SpecialRange::Multicast, "IPv4-mapped"),
            ("64:ff9b::192.168.0.1", SpecialRange::Private, "NAT64"),
            ("::127.0.0.1", SpecialRange::Loopback, "IPv4-compatible"),
        ] {
            let special = classify(text.parse().unwrap()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!((special.range, special.carried), (range, Some(form)), "{text}");
        }
        assert_eq!(classify("::ffff:8.8.8.8".parse().unwrap()), None);
        assert_eq!(classify("64:ff9b::8.8.8.8".parse().unwrap()), None);
    }

    #[test]
    fn a_special_address_is_told_in_words() {
        let told = |text: &str| classify(text.parse().unwrap()).unwrap().to_string();
        assert_eq!(told("127.0.0.1"), "a loopback address");
        assert_eq!(told("10.0.0.1"), "a private address");
        assert_eq!(told("169.254.169.254"), "a cloud metadata address");
        assert_eq!(told("0.0.0.0"), "an unspecified address");
        assert_eq!(told("::ffff:127.0.0.1"), "the IPv4-mapped form of a loopback address");
    }

    #[test]
    fn cidr_blocks_hold_their_addresses_and_no_others() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.255.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.0.0.1".parse().unwrap()), "the mapped form counts as the IPv4 address");
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(!block.contains("::a00:1".parse().unwrap()));
        assert_eq!(Cidr::parse("192.168.1.7/24").unwrap(), Cidr::parse("192.168.1.0/24").unwrap());
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let ula = Cidr::parse("fc00::/7").unwrap();
        assert!(ula.contains("fd00::1".parse().unwrap()) && !ula.contains("fe00::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/+8", "10.0.0/8", "host/8", "10.0.0.0/8/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_odd_ipv4_form_is_non_canonical() {
        for odd in [
            "2130706433",
            "017700000001",
            "0x7f000001",
            "0X7F000001",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "127.0.0.01",
            "127.000.000.001",
            "127.0.0.1.",
            "1.2.3.256",
            "1.2.3.4.5",
            "0",
            "0x",
            "evil.com.1",
            "169.254.43518",
        ] {
            assert!(non_canonical_ipv4(odd), "{odd}");
            assert!(looks_like_ipv4(odd), "{odd}");
        }
        for fine in ["127.0.0.1", "10.0.0.1", "0.0.0.0", "255.255.255.255", "example.com", "10.0.0.evil.com", "a1"] {
            assert!(!non_canonical_ipv4(fine), "{fine}");
        }
        for name in ["example.com", "10.0.0.evil.com", "x-0x7f", "0x7g"] {
            assert!(!looks_like_ipv4(name), "{name}");
        }
    }
}
