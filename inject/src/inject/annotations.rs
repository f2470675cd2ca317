//! Parsers and validators for the annotation values the injector honours.
//!
//! Every parser is total: it returns a short human `problem` string instead of panicking, so the
//! caller can aggregate all problems of one pod into a single refusal message.

use std::net::IpAddr;

/// Upper bound on one honoured annotation value; larger values are refused before parsing.
pub const MAX_ANNOTATION_VALUE_BYTES: usize = 64 * 1024;

/// Upper bound on items in one comma-separated list (ports, CIDRs, interfaces).
pub const MAX_LIST_ITEMS: usize = 1024;

/// A parsed Kubernetes resource quantity, kept as an exact integer of nano-units so that
/// `100m` and `0.1` compare equal and `1Gi` and `1024Mi` too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// The value in nano-units (10^-9), rounded up like Kubernetes does below that scale.
    pub fn nanos(self) -> i128 {
        self.nanos
    }
}

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `0.5`) without a regex.
///
/// Accepts the grammar of `k8s.io/apimachinery/pkg/api/resource`: optional sign, digits with an
/// optional fraction, then either a binary suffix (`Ki`..`Ei`), a decimal SI suffix
/// (`n u m "" k M G T P E`) or a decimal exponent (`e3`, `E-2`).
pub fn parse_quantity(value: &str) -> Result<Quantity, String> {
    const BAD: &str = "not a valid Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1Gi)";
    if value.is_empty() {
        return Err("empty; expected a Kubernetes quantity (e.g. 100m, 128Mi)".into());
    }
    if value.len() > 64 {
        return Err(BAD.into());
    }
    let bytes = value.as_bytes();
    let mut pos = 0;
    let negative = match bytes[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &value[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &value[frac_start..pos];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(BAD.into());
    }
    let suffix = &value[pos..];
    // (power of ten, power of 1024)
    let (exp10, exp1024): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(BAD.into());
            }
            let magnitude: i32 = digits.parse().map_err(|_| BAD.to_string())?;
            (
                if exp.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                },
                0,
            )
        }
        _ => return Err(BAD.into()),
    };
    // mantissa = int_digits.frac_digits, value = mantissa * 10^(exp10 - frac_len) * 1024^exp1024,
    // expressed in nanos: multiply by 10^9.
    let digits_all: String = [int_digits, frac_digits].concat();
    let digits_trimmed = digits_all.trim_start_matches('0');
    if digits_trimmed.len() > 30 {
        return Err(format!("{BAD}: out of range"));
    }
    let mut mantissa: i128 = 0;
    for b in digits_trimmed.bytes() {
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    let overflow = || format!("{BAD}: out of range");
    let mut scale = exp10 + 9 - frac_digits.len() as i32;
    for _ in 0..exp1024 {
        mantissa = mantissa.checked_mul(1024).ok_or_else(overflow)?;
    }
    while scale > 0 {
        mantissa = mantissa.checked_mul(10).ok_or_else(overflow)?;
        scale -= 1;
    }
    if scale < 0 {
        // Below nano precision: round up like Kubernetes' Quantity does.
        let mut divisor: i128 = 1;
        while scale < 0 && divisor < i128::MAX / 10 {
            divisor *= 10;
            scale += 1;
        }
        if scale < 0 {
            mantissa = i128::from(mantissa != 0);
        } else {
            let rounded_down = mantissa / divisor;
            mantissa = rounded_down + i128::from(mantissa % divisor != 0);
        }
    }
    Ok(Quantity {
        nanos: if negative { -mantissa } else { mantissa },
    })
}

/// Parses a resource quantity for a container request/limit: a quantity that is not negative.
pub fn parse_resource_quantity(value: &str) -> Result<Quantity, String> {
    let q = parse_quantity(value)?;
    if q.nanos < 0 {
        return Err("must not be negative".into());
    }
    Ok(q)
}

/// Parses `"true"`/`"false"` (exactly, like Istio's `strconv.ParseBool` subset used in practice,
/// plus Go's other spellings `1/0/t/f/TRUE/FALSE/True/False`).
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err("not a boolean; expected \"true\" or \"false\"".into()),
    }
}

/// Splits a comma-separated list, trimming blanks; an all-blank value is the empty list.
fn split_list(value: &str) -> Result<Vec<&str>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!("more than {MAX_LIST_ITEMS} entries"));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err("empty entry in comma-separated list".into());
    }
    Ok(items)
}

/// Parses a single TCP port number (1-65535).
pub fn parse_port(value: &str) -> Result<u16, String> {
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "\"{}\" is not a port number (1-65535)",
            value.escape_debug()
        ));
    }
    match value.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!("port {value} is out of range (1-65535)")),
    }
}

/// Parses a comma-separated port list (`"80, 443"`); empty means no ports.
pub fn parse_port_list(value: &str) -> Result<Vec<u16>, String> {
    split_list(value)?.into_iter().map(parse_port).collect()
}

/// A port list where `*` means "all ports" (`includeInboundPorts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSelection {
    All,
    Ports(Vec<u16>),
}

/// Parses `*` or a port list.
pub fn parse_port_selection(value: &str) -> Result<PortSelection, String> {
    if value.trim() == "*" {
        return Ok(PortSelection::All);
    }
    parse_port_list(value).map(PortSelection::Ports)
}

/// An IP network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Parses `addr/prefix` (IPv4 or IPv6); a bare address is refused like Istio does.
pub fn parse_cidr(value: &str) -> Result<Cidr, String> {
    let Some((addr, prefix)) = value.split_once('/') else {
        return Err(format!(
            "\"{}\" is not a CIDR (expected e.g. 10.0.0.0/8)",
            value.escape_debug()
        ));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("\"{}\" is not a CIDR: bad IP address", value.escape_debug()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => {
            return Err(format!(
                "\"{}\" is not a CIDR: prefix length must be 0-{max}",
                value.escape_debug()
            ));
        }
    };
    Ok(Cidr { addr, prefix })
}

/// Parses a comma-separated CIDR list; empty means none.
pub fn parse_cidr_list(value: &str) -> Result<Vec<Cidr>, String> {
    split_list(value)?.into_iter().map(parse_cidr).collect()
}

/// A CIDR list where `*` means "all addresses" (`includeOutboundIPRanges`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrSelection {
    All,
    Cidrs(Vec<Cidr>),
}

/// Parses `*` or a CIDR list.
pub fn parse_cidr_selection(value: &str) -> Result<CidrSelection, String> {
    if value.trim() == "*" {
        return Ok(CidrSelection::All);
    }
    parse_cidr_list(value).map(CidrSelection::Cidrs)
}

/// Parses a comma-separated list of network interface names (Linux: 1-15 bytes, no `/`,
/// no whitespace).
pub fn parse_interface_list(value: &str) -> Result<Vec<&str>, String> {
    let items = split_list(value)?;
    for item in &items {
        if item.len() > 15
            || item
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "\"{}\" is not a network interface name",
                item.escape_debug()
            ));
        }
    }
    Ok(items)
}

/// Envoy's log levels (`--proxyLogLevel`).
const ENVOY_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// Istio's (pilot-agent) scope log levels (`--log_output_level`).
const AGENT_LEVELS: &[&str] = &["debug", "info", "warn", "error", "fatal", "none"];

/// Validates an Envoy log level.
pub fn parse_envoy_log_level(value: &str) -> Result<&str, String> {
    if ENVOY_LEVELS.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "not an Envoy log level (one of {})",
            ENVOY_LEVELS.join(", ")
        ))
    }
}

fn is_scope_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Validates Envoy component levels: `component:level[,component:level]`.
pub fn parse_component_log_level(value: &str) -> Result<&str, String> {
    let items = split_list(value)?;
    if items.is_empty() {
        return Err("empty; expected component:level pairs (e.g. misc:error)".into());
    }
    for item in items {
        let Some((component, level)) = item.split_once(':') else {
            return Err(format!(
                "\"{}\" is not component:level",
                item.escape_debug()
            ));
        };
        if !is_scope_name(component) {
            return Err(format!(
                "\"{}\" is not an Envoy component name",
                component.escape_debug()
            ));
        }
        parse_envoy_log_level(level).map_err(|e| format!("{item}: {e}"))?;
    }
    Ok(value)
}

/// Validates pilot-agent levels: `level` or `scope:level[,scope:level]`.
pub fn parse_agent_log_level(value: &str) -> Result<&str, String> {
    let items = split_list(value)?;
    if items.is_empty() {
        return Err("empty; expected scope:level pairs (e.g. default:info)".into());
    }
    for item in items {
        let (scope, level) = item.split_once(':').unwrap_or(("default", item));
        if !is_scope_name(scope) {
            return Err(format!(
                "\"{}\" is not a log scope name",
                scope.escape_debug()
            ));
        }
        if !AGENT_LEVELS.contains(&level) {
            return Err(format!(
                "\"{}\" is not an agent log level (one of {})",
                level.escape_debug(),
                AGENT_LEVELS.join(", ")
            ));
        }
    }
    Ok(value)
}

/// Parses a non-negative 32-bit integer (probe timings).
pub fn parse_non_negative_i32(value: &str) -> Result<i32, String> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a non-negative integer".into());
    }
    value
        .parse::<i32>()
        .map_err(|_| "integer out of range".into())
}

/// Parses a status port: 0 (disables the proxy's own probes) or 1-65535.
pub fn parse_status_port(value: &str) -> Result<u16, String> {
    if value == "0" {
        return Ok(0);
    }
    parse_port(value)
}

/// Validates a container image reference: non-empty, no whitespace or control characters.
pub fn parse_image(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        return Err("empty image reference".into());
    }
    if value.len() > 4096 {
        return Err("image reference longer than 4096 bytes".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not an image reference (contains whitespace or control characters)".into());
    }
    Ok(value)
}

/// Validates a DNS-1123 subdomain (ConfigMap names).
pub fn parse_dns_subdomain(value: &str) -> Result<&str, String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(value)
    } else {
        Err("not a valid Kubernetes object name (DNS-1123 subdomain)".into())
    }
}

/// Validates a DNS-1123 label (volume names).
pub fn parse_dns_label(value: &str) -> Result<&str, String> {
    if value.len() <= 63 && !value.contains('.') && parse_dns_subdomain(value).is_ok() {
        Ok(value)
    } else {
        Err("not a valid DNS-1123 label".into())
    }
}

/// Parses `proxy.istio.io/config`: a YAML or JSON mapping (ProxyConfig overlay), with the
/// fields the injector itself reads type-checked.
pub fn parse_proxy_config(
    value: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let parsed: serde_json::Value = if value.trim_start().starts_with('{') {
        serde_json::from_str(value).map_err(|e| format!("not valid JSON: {e}"))?
    } else {
        serde_yaml_ng::from_str(value).map_err(|e| format!("not valid YAML: {e}"))?
    };
    let map = match parsed {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        _ => return Err("must be a mapping of ProxyConfig fields".into()),
    };
    check_proxy_config(&map)?;
    Ok(map)
}

/// Type-checks the ProxyConfig fields the injector interprets.
pub fn check_proxy_config(map: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    use serde_json::Value;
    if let Some(v) = map.get("holdApplicationUntilProxyStarts")
        && !v.is_boolean()
    {
        return Err(format!(
            "holdApplicationUntilProxyStarts must be a boolean, got {v}"
        ));
    }
    if let Some(v) = map.get("concurrency") {
        match v.as_i64() {
            Some(n) if (0..=1024).contains(&n) => {}
            _ => return Err(format!("concurrency must be an integer 0-1024, got {v}")),
        }
    }
    if let Some(v) = map.get("proxyMetadata") {
        let Value::Object(meta) = v else {
            return Err("proxyMetadata must be a mapping of strings".into());
        };
        for (k, v) in meta {
            if !v.is_string() {
                return Err(format!("proxyMetadata.{k} must be a string, got {v}"));
            }
            if !is_env_name(k) {
                return Err(format!(
                    "proxyMetadata key \"{}\" is not an environment variable name",
                    k.escape_debug()
                ));
            }
        }
    }
    if let Some(v) = map.get("interceptionMode") {
        match v.as_str() {
            Some("REDIRECT" | "TPROXY" | "NONE") => {}
            _ => {
                return Err(format!(
                    "interceptionMode must be REDIRECT, TPROXY or NONE, got {v}"
                ));
            }
        }
    }
    if let Some(v) = map.get("statusPort") {
        match v.as_u64() {
            Some(1..=65535) => {}
            _ => return Err(format!("statusPort must be a port 1-65535, got {v}")),
        }
    }
    Ok(())
}

/// Whether `name` is a C-identifier-like environment variable name.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// The interception mode annotation (`REDIRECT`, `TPROXY`, `NONE`).
pub fn parse_interception_mode(value: &str) -> Result<crate::config::InterceptionMode, String> {
    use crate::config::InterceptionMode;
    match value {
        "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        "NONE" => Ok(InterceptionMode::None),
        _ => Err("not an interception mode (REDIRECT, TPROXY or NONE)".into()),
    }
}

/// `sidecar.istio.io/proxyImageType`: image variant suffix.
pub fn parse_image_type(value: &str) -> Result<&'static str, String> {
    match value {
        "default" | "" => Ok(""),
        "debug" => Ok("-debug"),
        "distroless" => Ok("-distroless"),
        _ => Err("not an image type (default, debug or distroless)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_units() {
        assert_eq!(
            parse_quantity("100m").unwrap(),
            parse_quantity("0.1").unwrap()
        );
        assert_eq!(
            parse_quantity("1Gi").unwrap(),
            parse_quantity("1024Mi").unwrap()
        );
        assert_eq!(
            parse_quantity("2").unwrap(),
            parse_quantity("2000m").unwrap()
        );
        assert_eq!(
            parse_quantity("1e3").unwrap(),
            parse_quantity("1k").unwrap()
        );
        assert!(parse_quantity("1Ki").unwrap() > parse_quantity("1k").unwrap());
        assert_eq!(parse_quantity("1n").unwrap().nanos(), 1);
        assert_eq!(
            parse_quantity("0.0000000001").unwrap().nanos(),
            1,
            "rounds up below nano"
        );
    }

    #[test]
    fn bad_quantities() {
        for bad in [
            "lots",
            "",
            "1.2.3",
            "100mcores",
            "1 Gi",
            "Gi",
            ".",
            "1e",
            "1e1000",
            "--1",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_resource_quantity("-1").is_err());
        assert!(parse_quantity("99999999999999999999999999999999Ei").is_err());
    }
}
